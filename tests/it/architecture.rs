//! The module map's directions: a top-level module of `src/` refers only to modules below it.
//!
//! The order is read from `docs/ARCHITECTURE.md` (its `Layers, top down:` line), so the
//! document and the code cannot drift apart: a `crate::…` path that points up, or a module the
//! document does not place, fails this test.

use std::fs;
use std::path::{Path, PathBuf};

/// The line of `docs/ARCHITECTURE.md` that lists the layers, top down, as `` `a` > `b` ``.
const LAYERS_LINE: &str = "Layers, top down:";

#[test]
fn no_module_imports_one_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = fs::read_to_string(root.join("docs/ARCHITECTURE.md")).expect("read the doc");
    let layers = layers_from_doc(&doc).expect("docs/ARCHITECTURE.md lists the layers");
    let mut files = Vec::new();
    collect_rs(&root.join("src"), &mut files);
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|path| {
            let relative = path.strip_prefix(root).expect("under the root");
            (
                relative.to_string_lossy().replace('\\', "/"),
                fs::read_to_string(path).expect("read a source file"),
            )
        })
        .collect();
    assert!(sources.len() > 20, "found the sources");
    let problems = violations(&layers, &sources);
    assert!(
        problems.is_empty(),
        "module directions broken (see docs/ARCHITECTURE.md):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_finds_upward_imports() {
    let layers: Vec<String> = ["app", "dns", "state", "config"]
        .map(str::to_owned)
        .to_vec();
    let files = |path: &str, text: &str| vec![(path.to_owned(), text.to_owned())];
    // Down, and within a module: fine.
    assert!(
        violations(
            &layers,
            &files("src/dns/handler.rs", "use crate::state::Shared;")
        )
        .is_empty()
    );
    assert!(violations(&layers, &files("src/state/mod.rs", "use crate::state::x;")).is_empty());
    assert!(
        violations(
            &layers,
            &files("src/app.rs", "crate::config::Config::load()")
        )
        .is_empty()
    );
    // Comments do not count.
    assert!(
        violations(
            &layers,
            &files("src/config/mod.rs", "// see crate::dns::Catalog")
        )
        .is_empty()
    );
    // Up: in a `use`, in a grouped `use`, in an expression path, from a single-file module.
    assert_eq!(
        violations(
            &layers,
            &files(
                "src/state/snapshot.rs",
                "use crate::dns::{Answers, Catalog};"
            )
        ),
        ["src/state/snapshot.rs:1: state imports dns, which is above it"]
    );
    assert_eq!(
        violations(
            &layers,
            &files(
                "src/config/mod.rs",
                "use crate::{\n    state::Live,\n    app,\n};"
            )
        ),
        [
            "src/config/mod.rs:1: config imports state, which is above it",
            "src/config/mod.rs:1: config imports app, which is above it",
        ]
    );
    assert_eq!(
        violations(&layers, &files("src/dns.rs", "let x = crate::app::run;")),
        ["src/dns.rs:1: dns imports app, which is above it"]
    );
    // A module the document does not place.
    assert_eq!(
        violations(
            &layers,
            &files("src/extra/mod.rs", "use crate::config::Config;")
        ),
        ["src/extra/mod.rs: module extra is not in the layer list"]
    );
    assert_eq!(
        violations(&layers, &files("src/app.rs", "use crate::extra::X;")),
        ["src/app.rs:1: app imports extra, which is not in the layer list"]
    );
}

#[test]
fn the_layer_list_is_read_from_the_doc() {
    let doc = "text\n\nLayers, top down: `cli` > `app` > `config`.\n";
    assert_eq!(layers_from_doc(doc).unwrap(), ["cli", "app", "config"]);
    assert!(layers_from_doc("no such line").is_none());
}

/// The module names of the `Layers, top down:` line, in order.
fn layers_from_doc(doc: &str) -> Option<Vec<String>> {
    let line = doc.lines().find(|line| line.contains(LAYERS_LINE))?;
    let list = &line[line.find(LAYERS_LINE)? + LAYERS_LINE.len()..];
    let names: Vec<String> = list
        .split('>')
        .filter_map(|part| {
            let name = part.trim().trim_end_matches('.').trim_matches('`');
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect();
    (!names.is_empty()).then_some(names)
}

/// Every upward or unplaced reference in `files` (path relative to the crate root, text).
fn violations(layers: &[String], files: &[(String, String)]) -> Vec<String> {
    let rank = |name: &str| layers.iter().position(|layer| layer == name);
    let mut res = Vec::new();
    for (path, text) in files {
        let Some(module) = top_module(path) else {
            continue;
        };
        let Some(own_rank) = rank(module) else {
            res.push(format!("{path}: module {module} is not in the layer list"));
            continue;
        };
        for (line, target) in crate_references(text) {
            if target == module || target == "self" {
                continue;
            }
            match rank(&target) {
                Some(target_rank) if target_rank > own_rank => {}
                Some(_) => res.push(format!(
                    "{path}:{line}: {module} imports {target}, which is above it"
                )),
                None => res.push(format!(
                    "{path}:{line}: {module} imports {target}, which is not in the layer list"
                )),
            }
        }
    }
    res
}

/// The top-level module a source file belongs to; `None` for the crate root files.
fn top_module(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("src/")?;
    match rest.split_once('/') {
        Some((dir, _)) => Some(dir),
        None if rest == "lib.rs" || rest == "main.rs" => None,
        None => rest.strip_suffix(".rs"),
    }
}

/// Every top-level module named by a `crate::` path in `text`, with the line the path starts
/// on; comments are skipped.
fn crate_references(text: &str) -> Vec<(usize, String)> {
    let code: String = text
        .lines()
        .map(|line| line.find("//").map_or(line, |i| &line[..i]))
        .collect::<Vec<_>>()
        .join("\n");
    let mut res = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        let before = &code[..code.len() - rest.len() + i];
        let line = before.matches('\n').count() + 1;
        // `crate::` must start a path, not end an identifier such as `my_crate::`.
        let starts_path = !before
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        rest = &rest[i + "crate::".len()..];
        if !starts_path {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // A grouped use: the first segment of each item at depth one.
            let mut depth = 1;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && depth == 1 && (c.is_alphanumeric() || c == '_') => {
                        item_start = false;
                        res.push((line, identifier(&group[j..]).to_owned()));
                    }
                    _ => {}
                }
            }
        } else {
            let name = identifier(rest);
            if !name.is_empty() {
                res.push((line, name.to_owned()));
            }
        }
    }
    res
}

/// The identifier at the start of `text`.
fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Every `.rs` file under `dir`, sorted.
fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read a source directory")
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

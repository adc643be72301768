//! The country table: a representative point and the continent for each ISO country code.
//!
//! A country-only geo database (such as the shipped one) says only "GB"; routing by distance
//! needs a point, so we use the one in this table (see `geodata/README.md` for its source).

use std::collections::HashMap;

use super::{Continent, Coordinates, CountryCode};

/// The shipped country table (ISO code → continent and a representative point), used whenever a
/// configuration does not name its own.
pub const COUNTRIES_CSV: &str = include_str!("../../geodata/countries.csv");

/// ISO code → (continent, point), read from `iso_code,continent,latitude,longitude,name` rows.
#[derive(Debug, Clone, Default)]
pub struct CountryTable {
    entries: HashMap<CountryCode, (Continent, Coordinates)>,
}

impl CountryTable {
    /// Parses the CSV text; lines starting with `#` and the header are skipped.
    ///
    /// # Errors
    ///
    /// Every bad row, as `line N: what is wrong`.
    pub fn parse(text: &str) -> Result<CountryTable, Vec<String>> {
        let mut entries = HashMap::new();
        let mut errors = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with("iso_code,") {
                continue;
            }
            match parse_row(line) {
                Ok((code, continent, coordinates)) => {
                    if entries.insert(code, (continent, coordinates)).is_some() {
                        errors.push(format!("line {}: {code} appears twice", i + 1));
                    }
                }
                Err(message) => errors.push(format!("line {}: {message}", i + 1)),
            }
        }
        if errors.is_empty() {
            Ok(CountryTable { entries })
        } else {
            Err(errors)
        }
    }

    /// The continent and point of a country, if the table has it.
    pub fn get(&self, code: CountryCode) -> Option<(Continent, Coordinates)> {
        self.entries.get(&code).copied()
    }

    /// How many countries the table holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_row(line: &str) -> Result<(CountryCode, Continent, Coordinates), String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    let [code, continent, latitude, longitude, ..] = fields[..] else {
        return Err(format!(
            "expected iso_code,continent,latitude,longitude,name: {line:?}"
        ));
    };
    let code: CountryCode = code.parse().map_err(|e| format!("{code:?}: {e}"))?;
    let continent: Continent = continent
        .parse()
        .map_err(|e| format!("{continent:?}: {e}"))?;
    let coordinates = match (latitude.parse::<f64>(), longitude.parse::<f64>()) {
        (Ok(lat), Ok(lon)) => Coordinates::new(lat, lon),
        _ => None,
    }
    .ok_or_else(|| format!("{latitude:?},{longitude:?}: not a valid latitude,longitude"))?;
    Ok((code, continent, coordinates))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_parses_and_covers_the_examples() {
        let table = CountryTable::parse(COUNTRIES_CSV).expect("shipped table");
        assert!(table.len() > 200, "only {} countries", table.len());
        for (code, continent) in [("GB", "EU"), ("AU", "OC"), ("US", "NA"), ("BR", "SA")] {
            let (got, _) = table.get(code.parse().unwrap()).expect(code);
            assert_eq!(got, continent.parse().unwrap(), "{code}");
        }
    }

    #[test]
    fn bad_rows_are_reported_with_line_numbers() {
        let text = "# comment\niso_code,continent,latitude,longitude,name\nGB,EU,51.5,-0.1,UK\nXX1,EU,0,0,x\nFR,ZZ,48.8,2.3,France\nDE,EU,99,0,Germany\nGB,EU,51.5,-0.1,UK\n";
        let errors = CountryTable::parse(text).unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("line 4:"), "{errors:?}");
        assert!(errors[1].starts_with("line 5:"), "{errors:?}");
        assert!(errors[2].starts_with("line 6:"), "{errors:?}");
        assert!(errors[3].contains("twice"), "{errors:?}");
    }
}

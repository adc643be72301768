//! Reloads and shutdown of a running in-process server: a good reload is serving when
//! `reload()` returns, a bad one (configuration, zone file or geo database) changes nothing that
//! clients see, and cancelling the shutdown token stops the server cleanly.

use std::net::Ipv4Addr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meridian::config::ConfigError;

use crate::client::{Ask, a_records};
use crate::support::{CONFIG, GEO_FILE, TestServer, ZONE};

const EU_WEST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 3);
const EU_WEST_NEW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 33);

/// The test configuration with eu-west's IPv4 pool for `www` replaced by `a` (YAML text).
fn config_with_eu_west(a: &str) -> String {
    let config = CONFIG.replace("a: [192.0.2.3]", &format!("a: [{a}]"));
    assert_ne!(
        config, CONFIG,
        "the eu-west pool is in the test configuration"
    );
    config
}

/// `www.example.com A` for a London client.
async fn london(server: &TestServer) -> Vec<Ipv4Addr> {
    let reply = Ask::new("www.example.com", RecordType::A)
        .ecs("81.2.69.0/24")
        .udp(server.udp)
        .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    a_records(&reply)
}

#[track_caller]
fn assert_problem_at(error: &ConfigError, path: &str) {
    assert!(
        error.problems.iter().any(|problem| problem.path == path),
        "expected a problem at {path}, got:\n{error}"
    );
}

#[tokio::test]
async fn reload_publishes_a_new_config_and_keeps_it_through_a_bad_one() {
    let server = TestServer::example().await;
    assert_eq!(london(&server).await, [EU_WEST]);

    server.write_config(&config_with_eu_west("192.0.2.33"));
    assert_eq!(
        server.reload().await,
        Ok(2),
        "the first reload is generation 2"
    );
    // Serving as soon as reload() returns: no waiting.
    assert_eq!(london(&server).await, [EU_WEST_NEW]);

    server.write_config(&config_with_eu_west("not-an-ip"));
    let error = server.reload().await.expect_err("a bad address is refused");
    assert_problem_at(&error, "services.www.pools.eu-west.a[0]");
    assert!(
        error
            .problems
            .iter()
            .any(|p| p.message.contains("not-an-ip")),
        "the message names the bad value:\n{error}"
    );
    assert_eq!(
        london(&server).await,
        [EU_WEST_NEW],
        "the last good config serves"
    );

    // A YAML syntax error is refused the same way.
    server.write_config("services: [unclosed");
    assert!(server.reload().await.is_err());
    assert_eq!(london(&server).await, [EU_WEST_NEW]);

    // Failed reloads use up no generation.
    server.write_config(CONFIG);
    assert_eq!(server.reload().await, Ok(3));
    assert_eq!(london(&server).await, [EU_WEST]);
}

#[tokio::test]
async fn a_bad_zone_file_on_reload_keeps_the_old_zone() {
    let server = TestServer::example().await;
    server.write_zone(&format!("{ZONE}new IN A 192.0.2.77\n"));
    assert_eq!(server.reload().await, Ok(2));
    let reply = Ask::new("new.example.com", RecordType::A)
        .udp(server.udp)
        .await;
    assert_eq!(
        a_records(&reply),
        [Ipv4Addr::new(192, 0, 2, 77)],
        "the new record serves"
    );

    // A syntax error (an A record without a valid address) and a zone without its SOA.
    for broken in [
        format!("{ZONE}broken IN A 192.0.2\n"),
        "$ORIGIN example.com.\n$TTL 3600\n@ IN NS ns1.example.com.\nns1 IN A 192.0.2.53\n"
            .to_owned(),
    ] {
        server.write_zone(&broken);
        let error = server.reload().await.expect_err("a broken zone is refused");
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.path.starts_with("zones[0]")),
            "the problem names the zone:\n{error}"
        );
        let reply = Ask::new("new.example.com", RecordType::A)
            .udp(server.udp)
            .await;
        assert_eq!(
            a_records(&reply),
            [Ipv4Addr::new(192, 0, 2, 77)],
            "the old zone keeps serving"
        );
        let reply = Ask::new("nope.example.com", RecordType::A)
            .udp(server.udp)
            .await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    }
}

#[tokio::test]
async fn a_missing_geo_database_on_reload_keeps_the_old_snapshot() {
    let server = TestServer::example().await;
    let geo = server.dir().join(GEO_FILE);
    let bytes = std::fs::read(&geo).unwrap();
    std::fs::remove_file(&geo).unwrap();
    let error = server.reload().await.expect_err("no geo database");
    assert!(
        error
            .problems
            .iter()
            .any(|p| p.path.starts_with("geo.database")),
        "the problem names the database:\n{error}"
    );
    assert_eq!(london(&server).await, [EU_WEST], "still locating clients");

    // Something that is not a MaxMind database at all.
    std::fs::write(&geo, b"not a database").unwrap();
    let error = server.reload().await.expect_err("not a database");
    assert!(
        error
            .problems
            .iter()
            .any(|p| p.path.starts_with("geo.database"))
    );
    assert_eq!(london(&server).await, [EU_WEST]);

    std::fs::write(&geo, bytes).unwrap();
    assert_eq!(server.reload().await, Ok(2));
    assert_eq!(london(&server).await, [EU_WEST]);
}

#[tokio::test]
async fn queries_during_reloads_always_see_one_whole_snapshot() {
    let server = TestServer::example().await;
    let old = CONFIG.to_owned();
    let new = config_with_eu_west("192.0.2.33");
    let udp = server.udp;
    let tcp = server.tcp;
    let stop = tokio_util::sync::CancellationToken::new();
    let querier = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n_queries = 0u32;
            while !stop.is_cancelled() {
                let ask = Ask::new("www.example.com", RecordType::A).ecs("81.2.69.0/24");
                let reply = if n_queries.is_multiple_of(2) {
                    ask.udp(udp).await
                } else {
                    ask.tcp(tcp).await
                };
                assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
                let got = a_records(&reply);
                assert!(
                    got == [EU_WEST] || got == [EU_WEST_NEW],
                    "an answer from neither snapshot: {got:?}"
                );
                n_queries += 1;
            }
            n_queries
        }
    });
    for i in 0..10u64 {
        server.write_config(if i % 2 == 0 { &new } else { &old });
        assert_eq!(server.reload().await, Ok(i + 2));
        // Let the querier run between reloads (it shares this test's runtime).
        tokio::task::yield_now().await;
    }
    stop.cancel();
    let n_queries = querier.await.expect("the querier saw only valid answers");
    assert!(n_queries > 0);
    // Ten reloads, ending on the old configuration.
    assert_eq!(london(&server).await, [EU_WEST]);
}

#[tokio::test]
async fn cancelling_the_token_stops_the_server_cleanly() {
    let server = TestServer::example().await;
    assert_eq!(london(&server).await, [EU_WEST]);
    let reload = server.reload().await;
    assert_eq!(reload, Ok(2));
    let result = server.stop().await;
    assert!(result.is_ok(), "app::run ended with {result:?}");
}

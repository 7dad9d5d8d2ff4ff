//! Tests of the order model: parsing and validation through [`parse_order`] (the README's
//! examples, every rule of `parse.rs`, hostile YAML) and the spec's per-kind methods.

use super::*;
use crate::orders::OrderOptions;

fn id() -> OrderId {
    OrderId::new("app1/target1").unwrap()
}

fn parse(text: &str) -> Result<ParsedOrder, OrderError> {
    parse_order(&id(), text, None, &OrderOptions::default())
}

/// The key named by an `Invalid` error (panics on any other outcome).
fn invalid_key(text: &str) -> String {
    match parse(text) {
        Err(OrderError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid-key error for {text:?}, got {other:?}"),
    }
}

const README_ORDER: &str =
    "user: tmon\ntask: tun_eth0_4061\nstep: 300\npings: 20\nprobe: fping\nfping:\n    host: 62.179.116.250\n";
const README_TELEGRAF: &str = "measurement_name: tunnel\ntags:\n    tunnel_id: 12458\n    remote_host: 5292\n    interface: eth2\n    remote_interface: eth2\n";

fn base(probe: &str, section: &str) -> String {
    format!("user: tmon\nstep: 20\npings: 3\nprobe: {probe}\n{section}")
}

#[test]
fn readme_example_order_parses() {
    let parsed = parse(README_ORDER).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let order = parsed.order;
    assert_eq!(order.user, "tmon");
    assert_eq!(order.task.as_deref(), Some("tun_eth0_4061"));
    assert_eq!((order.step, order.pings), (300, 20));
    assert_eq!(order.rrd_template, RrdTemplate::Smokeping);
    assert_eq!(order.telegraf, None);
    match order.probe {
        ProbeSpec::Fping(f) => {
            assert_eq!(f.host, "62.179.116.250");
            assert_eq!(f.address, "62.179.116.250".parse::<IpAddr>().unwrap());
        }
        other => panic!("not fping: {other:?}"),
    }
}

#[test]
fn readme_top_level_measurement_name_and_numeric_tags_are_forwarding_metadata() {
    let parsed = parse(&format!("{README_ORDER}{README_TELEGRAF}")).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let meta = parsed.order.telegraf.unwrap();
    assert_eq!(meta.measurement_name, "tunnel");
    assert_eq!(meta.tags["tunnel_id"], "12458");
    assert_eq!(meta.tags["remote_host"], "5292");
    assert_eq!(meta.tags["interface"], "eth2");
    assert_eq!(meta.tags.len(), 4);
}

#[test]
fn readme_old_interface_telegraf_file_attaches_metadata() {
    let parsed = parse_order(&id(), README_ORDER, Some(README_TELEGRAF), &OrderOptions::default()).unwrap();
    let meta = parsed.order.telegraf.unwrap();
    assert_eq!(meta.measurement_name, "tunnel");
    assert_eq!(meta.tags["tunnel_id"], "12458");
}

#[test]
fn order_keys_take_precedence_over_telegraf_file_and_section_over_top_level() {
    let own = format!("{README_ORDER}measurement_name: own\n");
    let parsed = parse_order(&id(), &own, Some(README_TELEGRAF), &OrderOptions::default()).unwrap();
    assert_eq!(parsed.order.telegraf.unwrap().measurement_name, "own");

    let both = format!("{own}telegraf:\n  measurement_name: section\n  tags: {{a: 1}}\n");
    let parsed = parse(&both).unwrap();
    let meta = parsed.order.telegraf.unwrap();
    assert_eq!(meta.measurement_name, "section");
    assert_eq!(meta.tags["a"], "1");
    assert!(parsed.warnings.iter().any(|w| w.contains("measurement_name")));
}

#[test]
fn readme_fping_section_with_interface_and_source_ip_parses() {
    let text = base(
        "fping",
        "fping:\n    host: 213.156.230.57\n    interface: eth0\n    source_ip: 10.0.0.12\n",
    );
    match parse(&text).unwrap().order.probe {
        ProbeSpec::Fping(f) => {
            assert_eq!(f.interface.as_deref(), Some("eth0"));
            assert_eq!(f.source_ip, Some("10.0.0.12".parse().unwrap()));
            assert_eq!(f.interval_ms, None);
        }
        other => panic!("not fping: {other:?}"),
    }
}

#[test]
fn readme_httping_section_parses_comma_separated_status_codes() {
    let text = base(
        "httping",
        "httping:\n    url: http://www.example.com\n    user_agent: pingmachine\n    proxy: http://10.0.0.24:8080\n    http_codes_as_failure: 403,407,503\n",
    );
    match parse(&text).unwrap().order.probe {
        ProbeSpec::Httping(h) => {
            assert_eq!(h.url, "http://www.example.com");
            assert_eq!(h.user_agent.as_deref(), Some("pingmachine"));
            assert_eq!(h.proxy.as_deref(), Some("http://10.0.0.24:8080"));
            assert_eq!(h.http_codes_as_failure, vec![403, 407, 503]);
        }
        other => panic!("not httping: {other:?}"),
    }
}

#[test]
fn status_codes_may_be_a_yaml_list_or_one_number() {
    let list = base(
        "httping",
        "httping: {url: 'https://x.test/', http_codes_as_failure: [500, '502']}\n",
    );
    let one = base(
        "httping",
        "httping: {url: 'https://x.test/', http_codes_as_failure: 503}\n",
    );
    for (text, expected) in [(list, vec![500, 502]), (one, vec![503])] {
        match parse(&text).unwrap().order.probe {
            ProbeSpec::Httping(h) => assert_eq!(h.http_codes_as_failure, expected),
            other => panic!("not httping: {other:?}"),
        }
    }
    let bad = base(
        "httping",
        "httping: {url: 'https://x.test/', http_codes_as_failure: '403,abc'}\n",
    );
    assert_eq!(invalid_key(&bad), "httping.http_codes_as_failure");
}

#[test]
fn readme_sping_and_pping_sections_use_the_configured_command() {
    let options = OrderOptions {
        sping_command: vec!["my-sping".into(), "{host}".into()],
        ..OrderOptions::default()
    };
    for probe in ["sping", "pping"] {
        let text = base(
            probe,
            &format!("{probe}:\n    host: 213.156.230.57\n    interface: eth0\n    source_ip: 10.0.0.12\n    flags:\n"),
        );
        let parsed = parse_order(&id(), &text, None, &options).unwrap();
        match parsed.order.probe {
            ProbeSpec::Exec(e) => {
                let expected = if probe == "sping" {
                    &options.sping_command
                } else {
                    &options.pping_command
                };
                assert_eq!(&e.command, expected);
                assert!(e.flags.is_empty());
                assert_eq!(e.host.as_deref(), Some("213.156.230.57"));
                assert_eq!(e.interface.as_deref(), Some("eth0"));
            }
            other => panic!("not exec: {other:?}"),
        }
    }
    let flagged = base(
        "sping",
        "sping: {host: '1-ff00:0:110,10.0.0.1', flags: '--sciond 1.2.3.4 -v'}\n",
    );
    match parse(&flagged).unwrap().order.probe {
        ProbeSpec::Exec(e) => {
            assert_eq!(e.kind, ExecKind::Sping);
            assert_eq!(e.flags, ["--sciond", "1.2.3.4", "-v"]);
        }
        other => panic!("not exec: {other:?}"),
    }
}

#[test]
fn exec_command_is_a_list_or_a_whitespace_split_string() {
    let list = base("exec", "exec: {command: ['/bin/echo', 'time=1 ms'], timeout: 500}\n");
    let string = base("exec", "exec: {command: '/bin/echo  time=1  ms'}\n");
    match parse(&list).unwrap().order.probe {
        ProbeSpec::Exec(e) => {
            assert_eq!(e.command, ["/bin/echo", "time=1 ms"]);
            assert_eq!(e.timeout_ms, Some(500));
        }
        other => panic!("not exec: {other:?}"),
    }
    match parse(&string).unwrap().order.probe {
        ProbeSpec::Exec(e) => assert_eq!(e.command, ["/bin/echo", "time=1", "ms"]),
        other => panic!("not exec: {other:?}"),
    }
    assert_eq!(invalid_key(&base("exec", "exec: {command: []}\n")), "exec.command");
    assert_eq!(invalid_key(&base("exec", "exec: {timeout: 5}\n")), "exec.command");
}

#[test]
fn exec_command_using_host_placeholder_needs_a_host() {
    let text = base("exec", "exec: {command: 'ping -c {pings} {host}'}\n");
    assert_eq!(invalid_key(&text), "exec.host");
    let ok = base("exec", "exec: {command: 'ping -c {pings} {host}', host: '::1'}\n");
    assert!(parse(&ok).is_ok());
}

#[test]
fn tcp_section_resolves_host_and_port() {
    let text = base("tcp", "tcp: {host: 127.0.0.1, port: 8080, interval: 250}\n");
    match parse(&text).unwrap().order.probe {
        ProbeSpec::Tcp(t) => {
            assert_eq!(t.address, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
            assert_eq!(t.interval_ms, Some(250));
        }
        other => panic!("not tcp: {other:?}"),
    }
    assert_eq!(invalid_key(&base("tcp", "tcp: {host: 127.0.0.1}\n")), "tcp.port");
    assert_eq!(
        invalid_key(&base("tcp", "tcp: {host: 127.0.0.1, port: 70000}\n")),
        "tcp.port"
    );
}

#[test]
fn host_name_is_resolved_with_the_system_resolver() {
    let text = base("fping", "fping: {host: localhost}\n");
    match parse(&text).unwrap().order.probe {
        ProbeSpec::Fping(f) => {
            assert_eq!(f.host, "localhost");
            assert!(f.address.is_loopback(), "{}", f.address);
        }
        other => panic!("not fping: {other:?}"),
    }
}

#[test]
fn unresolvable_host_is_a_retryable_error_naming_the_host() {
    let text = base("fping", "fping: {host: no-such-host.invalid}\n");
    let err = parse(&text).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(&err, OrderError::Unresolvable { host, .. } if host == "no-such-host.invalid"));
    assert!(err.to_string().contains("no-such-host.invalid"));
}

#[test]
fn unknown_keys_are_warnings_naming_the_key_and_the_order_stays_valid() {
    let text = format!("{README_ORDER}    ttl: 5\ncolour: blue\nhttping: {{url: 'http://x.test'}}\n");
    let parsed = parse(&text).unwrap();
    let all = parsed.warnings.join("\n");
    assert!(all.contains("`colour`"), "{all}");
    assert!(all.contains("`fping.ttl`"), "{all}");
    assert!(all.contains("`httping`"), "{all}");
    assert_eq!(parsed.warnings.len(), 3, "{all}");
}

#[test]
fn missing_required_keys_are_named() {
    for key in ["user", "step", "pings", "probe"] {
        let text: String = README_ORDER
            .lines()
            .filter(|line| !line.starts_with(&format!("{key}:")))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(invalid_key(&text), key);
    }
    assert_eq!(invalid_key(&base("fping", "fping: {interface: eth0}\n")), "fping.host");
    assert_eq!(invalid_key(&base("httping", "httping: {proxy: x}\n")), "httping.url");
}

#[test]
fn out_of_range_and_wrongly_typed_numbers_are_named() {
    let cases = [
        ("step: 0", "step"),
        ("step: -5", "step"),
        ("step: 1.5", "step"),
        ("step: fast", "step"),
        ("step: [1]", "step"),
        ("step: 86401", "step"),
        ("pings: 0", "pings"),
        ("pings: -1", "pings"),
        ("pings: 1001", "pings"),
        ("pings: {a: 1}", "pings"),
    ];
    for (line, key) in cases {
        let text = README_ORDER.replace(if key == "step" { "step: 300" } else { "pings: 20" }, line);
        assert_eq!(invalid_key(&text), key, "{line}");
    }
    let huge = README_ORDER.replace("step: 300", "step: 99999999999999999999999");
    let err = parse(&huge).unwrap_err().to_string();
    assert!(err.contains("step"), "{err}");
    // pingmachine (Perl) accepted quoted numbers; so do we.
    let quoted = README_ORDER.replace("step: 300", "step: '300'");
    assert_eq!(parse(&quoted).unwrap().order.step, 300);
}

#[test]
fn wrongly_typed_strings_and_sections_are_named() {
    let cases = [
        (README_ORDER.replace("user: tmon", "user: [a, b]"), "user"),
        (README_ORDER.replace("user: tmon", "user: true"), "user"),
        (
            README_ORDER.replace("    host: 62.179.116.250", "    host: {a: 1}"),
            "fping.host",
        ),
        (
            README_ORDER.replace("fping:\n    host: 62.179.116.250\n", "fping: 62.179.116.250\n"),
            "fping",
        ),
        (
            base("fping", "fping: {host: 127.0.0.1, source_ip: not-an-ip}\n"),
            "fping.source_ip",
        ),
        (
            base("fping", "fping: {host: 127.0.0.1, interface: 'eth0 eth1'}\n"),
            "fping.interface",
        ),
        (
            base("fping", "fping: {host: 127.0.0.1, interval: 0}\n"),
            "fping.interval",
        ),
        (base("fping", "fping: {host: '-f /etc/passwd'}\n"), "fping.host"),
        (base("fping", "fping: {host: ''}\n"), "fping.host"),
        (base("httping", "httping: {url: 'ftp://x.test'}\n"), "httping.url"),
        (base("httping", "httping: {url: 'http://'}\n"), "httping.url"),
        (
            base("httping", "httping: {url: 'http://x.test', interval: -1}\n"),
            "httping.interval",
        ),
        (format!("{README_ORDER}rrd_template: fancy\n"), "rrd_template"),
        (format!("{README_ORDER}telegraf: yes\n"), "telegraf"),
        (
            format!("{README_ORDER}telegraf: {{tags: {{a: b}}}}\n"),
            "telegraf.measurement_name",
        ),
        (format!("{README_ORDER}measurement_name: m\ntags: [a]\n"), "tags"),
        (
            format!("{README_ORDER}measurement_name: m\ntags: {{a: [1]}}\n"),
            "tags.a",
        ),
        (
            format!("{README_ORDER}measurement_name: m\ntags: {{a: ''}}\n"),
            "tags.a",
        ),
        (format!("{README_ORDER}1: one\n"), ""),
    ];
    for (text, key) in cases {
        assert_eq!(invalid_key(&text), key, "{text}");
    }
}

#[test]
fn unknown_probe_is_an_error_naming_the_probe() {
    let text = README_ORDER.replace("probe: fping", "probe: smoke");
    assert_eq!(invalid_key(&text), "probe");
    assert!(parse(&text).unwrap_err().to_string().contains("smoke"));
}

#[test]
fn probe_without_its_section_is_an_error_not_a_crash() {
    let text = "user: tmon\nstep: 300\npings: 20\nprobe: fping\n";
    assert_eq!(invalid_key(text), "fping");
    let other_section = "user: tmon\nstep: 300\npings: 20\nprobe: tcp\nfping: {host: 127.0.0.1}\n";
    assert_eq!(invalid_key(other_section), "tcp");
}

#[test]
fn norrd_template_is_accepted() {
    let text = format!("{README_ORDER}rrd_template: norrd\n");
    assert_eq!(parse(&text).unwrap().order.rrd_template, RrdTemplate::Norrd);
}

#[test]
fn empty_and_comment_only_orders_are_empty_errors() {
    for text in ["", "   \n", "# just a comment\n", "~\n"] {
        assert!(matches!(parse(text), Err(OrderError::Empty { .. })), "{text:?}");
    }
}

#[test]
fn list_or_scalar_at_top_level_is_not_a_map() {
    for (text, found) in [("- a\n- b\n", "a list"), ("hello\n", "a string"), ("42\n", "a number")] {
        match parse(text) {
            Err(OrderError::NotAMap { found: f, .. }) => assert_eq!(f, found),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn broken_yaml_binary_garbage_and_multiple_documents_are_yaml_errors() {
    let garbage: String = (0u8..=255).map(char::from).cycle().take(4096).collect();
    let cases = [
        "user: [unclosed\n".to_string(),
        "user: tmon\n  step: 3\n bad indent: {\n".to_string(),
        "\0\u{1}\u{2}ELF\u{7f}".to_string(),
        garbage,
        "a: 1\n---\nb: 2\n".to_string(),
        "user: *undefined_alias\n".to_string(),
    ];
    for text in cases {
        match parse(&text) {
            Err(OrderError::Yaml { .. }) => {}
            other => panic!("{:?}: {other:?}", &text[..text.len().min(40)]),
        }
    }
}

#[test]
fn duplicate_keys_are_an_error_naming_the_key() {
    let text = format!("{README_ORDER}step: 20\n");
    match parse(&text) {
        Err(OrderError::Yaml { message, .. }) => {
            assert!(message.contains("duplicate") && message.contains("step"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn alias_bomb_is_refused_without_expanding_it() {
    // "Billion laughs": 9 levels of 9 references = 387,420,489 leaves if expanded.
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..=9 {
        let prev = format!("*a{}", level - 1);
        let refs = [prev.as_str(); 9].join(", ");
        text.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    text.push_str(README_ORDER);
    match parse(&text) {
        Err(OrderError::Yaml { message, .. }) => {
            assert!(message.contains("alias expansion limit"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_alias_replaying_a_large_list_many_times_is_refused() {
    // 1,000 aliases of a 1,000-item list: a million nodes (about 1 GB) from 5 KB, within
    // yaml_serde's own limit of 100 alias jumps per event.
    let n = 1000;
    let text = format!("a: &x [{}]\nb: [{}]\n{README_ORDER}", "a, ".repeat(n), "*x, ".repeat(n));
    match parse(&text) {
        Err(OrderError::Yaml { message, .. }) => {
            assert!(message.contains("alias expansion limit"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn deeply_nested_yaml_is_refused_without_overflowing_the_stack() {
    let depth = 10_000;
    let text = format!("user: {}{}\n", "[".repeat(depth), "]".repeat(depth));
    match parse(&text) {
        Err(OrderError::Yaml { message, .. }) => {
            assert!(message.contains("recursion limit"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let maps = format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth));
    assert!(matches!(parse(&maps), Err(OrderError::Yaml { .. })));
}

#[test]
fn merge_keys_are_applied() {
    let text = "defaults: &d {user: tmon, step: 20, pings: 3}\n<<: *d\nprobe: fping\nfping: {host: 127.0.0.1}\n";
    let parsed = parse(text).unwrap();
    assert_eq!(parsed.order.step, 20);
    assert!(parsed.warnings.iter().any(|w| w.contains("defaults")));
}

#[test]
fn broken_telegraf_file_is_an_error_naming_that_file() {
    for bad in ["[a, b]", "tags: {a: b}", "measurement_name: [x]", "{"] {
        match parse_order(&id(), README_ORDER, Some(bad), &OrderOptions::default()) {
            Err(OrderError::Invalid { key, .. }) => {
                assert!(key.starts_with("telegraf/app1/target1"), "{key}")
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}

#[test]
fn every_probe_kind_is_named_once_and_parses_back_from_its_name() {
    let names: std::collections::BTreeSet<&str> = ProbeKind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names.len(), ProbeKind::ALL.len());
    assert_eq!(PROBE_NAMES.to_vec(), ProbeKind::ALL.map(ProbeKind::name).to_vec());
    for kind in ProbeKind::ALL {
        assert_eq!(ProbeKind::from_name(kind.name()), Some(kind));
    }
    assert_eq!(ProbeKind::from_name("smoke"), None);
}

#[test]
fn each_parsed_spec_knows_its_name_target_batch_key_and_interval() {
    // The batch keys are the batches' identity (their phase in the step): pinned exactly.
    let cases = [
        (
            base("fping", "fping: {host: 127.0.0.1, interface: eth0, interval: 250}\n"),
            "fping",
            "127.0.0.1",
            "fping src=None if=Some(\"eth0\") int=Some(250)",
            Some(250),
        ),
        (
            base("fping", "fping: {host: localhost}\n"),
            "fping",
            "localhost (",
            "fping src=None if=None int=None",
            None,
        ),
        (
            base("httping", "httping: {url: 'https://x.test/', interval: 1.5}\n"),
            "httping",
            "https://x.test/",
            "httping int=Some(1.5)",
            Some(1500),
        ),
        (
            base("tcp", "tcp: {host: 127.0.0.1, port: 80, source_ip: 127.0.0.2}\n"),
            "tcp",
            "127.0.0.1:80",
            "tcp src=Some(127.0.0.2) int=None",
            None,
        ),
        (
            base("exec", "exec: {command: '/bin/echo time=1 ms', timeout: 500}\n"),
            "exec",
            "/bin/echo time=1 ms",
            "exec timeout=Some(500)",
            None,
        ),
        (
            base("sping", "sping: {host: '1-ff00:0:110,10.0.0.1'}\n"),
            "sping",
            "1-ff00:0:110,10.0.0.1",
            "sping timeout=None",
            None,
        ),
        (
            base("pping", "pping: {host: h1}\n"),
            "pping",
            "h1",
            "pping timeout=None",
            None,
        ),
    ];
    for (text, name, target, batch_key, interval_ms) in cases {
        let probe = parse(&text).unwrap().order.probe;
        assert_eq!(probe.name(), name, "{text}");
        assert_eq!(probe.kind().name(), name, "{text}");
        assert!(probe.target().starts_with(target), "{text}: {}", probe.target());
        assert_eq!(probe.batch_key(), batch_key, "{text}");
        assert_eq!(probe.interval_ms(), interval_ms, "{text}");
        assert_eq!(
            probe.resolved_host().is_some(),
            matches!(name, "fping" | "tcp"),
            "{text}"
        );
    }
}

#[test]
fn expire_never_is_parsed_and_absent_or_null_means_the_timeout() {
    let never = parse(&format!("{README_ORDER}expire: never\n")).unwrap();
    assert!(never.warnings.is_empty(), "{:?}", never.warnings);
    assert_eq!(never.order.expire, Expiry::Never);
    assert_eq!(parse(README_ORDER).unwrap().order.expire, Expiry::Timeout);
    assert_eq!(
        parse(&format!("{README_ORDER}expire: ~\n")).unwrap().order.expire,
        Expiry::Timeout
    );
}

#[test]
fn any_other_expire_value_is_an_error_naming_the_key() {
    for value in [
        "Never",
        "\"\"",
        "no",
        "false",
        "3600",
        "[never]",
        "{never: 1}",
        "nevermore",
    ] {
        let text = format!("{README_ORDER}expire: {value}\n");
        assert_eq!(invalid_key(&text), "expire", "expire: {value}");
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("never"), "{message}");
    }
}

#[test]
fn alert_thresholds_are_parsed_in_block_and_flow_form_with_numbers_or_units() {
    let text = format!(
        "{README_ORDER}alert:\n    warning: {{loss: 10%, median: 100ms, max: 0.5}}\n    critical:\n        loss: 5\n        max: 1s\n        median: \"@0.2:0.4\"\n"
    );
    let parsed = parse(&text).unwrap();
    assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    let alert = parsed.order.alert;
    let warning = &alert.warning;
    let loss = warning.loss.as_ref().unwrap();
    assert!(loss.percent && loss.range.to_string() == "10" && loss.written == "10%");
    assert_eq!(warning.median.as_ref().unwrap().range.to_string(), "0.1");
    assert_eq!(warning.max.as_ref().unwrap().written, "0.5");
    let critical = &alert.critical;
    assert!(!critical.loss.as_ref().unwrap().percent);
    assert_eq!(critical.max.as_ref().unwrap().range.to_string(), "1");
    assert!(critical.median.as_ref().unwrap().range.alerts(0.3));
    // The same as the command line's lists give.
    assert_eq!(
        *alert,
        Alert::parse_lists(
            Some("loss=10%,median=100ms,max=0.5"),
            Some("loss=5,max=1s,median=@0.2:0.4")
        )
        .unwrap()
    );
    // Absent, null, empty: no thresholds of its own.
    for empty in ["", "alert: ~\n", "alert: {}\n", "alert: {warning: ~, critical: {}}\n"] {
        let parsed = parse(&format!("{README_ORDER}{empty}")).unwrap();
        assert!(parsed.order.alert.is_empty(), "{empty:?}");
        assert!(parsed.warnings.is_empty(), "{empty:?}: {:?}", parsed.warnings);
    }
    // A range without `@` needs no quotes.
    let range = parse(&format!("{README_ORDER}alert: {{warning: {{median: 10ms:20ms}}}}\n")).unwrap();
    assert_eq!(
        range.order.alert.warning.median.as_ref().unwrap().range.to_string(),
        "0.01:0.02"
    );
}

#[test]
fn an_invalid_alert_makes_the_order_invalid_naming_the_key() {
    let cases = [
        ("alert: 10%", "alert", "must be a map like"),
        ("alert: [loss]", "alert", "must be a map like"),
        (
            "alert: {warn: {loss: 1}}",
            "alert.warn",
            "unknown level (known: warning, critical)",
        ),
        (
            "alert: {warning: \"loss=2\"}",
            "alert.warning",
            "must be a map of loss, median and max",
        ),
        ("alert: {warning: {min: 1ms}}", "alert.warning.min", "unknown metric"),
        (
            "alert: {critical: {loss: 101%}}",
            "alert.critical.loss",
            "more than 100%",
        ),
        ("alert: {critical: {loss: ten}}", "alert.critical.loss", "not a count"),
        (
            "alert: {critical: {median: 100xs}}",
            "alert.critical.median",
            "not a time",
        ),
        ("alert: {critical: {median: -1}}", "alert.critical.median", "not a time"),
        (
            "alert: {critical: {median: true}}",
            "alert.critical.median",
            "must be a string",
        ),
        (
            "alert: {critical: {max: [1, 2]}}",
            "alert.critical.max",
            "must be a string",
        ),
        (
            "alert: {critical: {max: {a: 1}}}",
            "alert.critical.max",
            "must be a string",
        ),
        (
            "alert: {critical: {max: 2ms:1ms}}",
            "alert.critical.max",
            "start is above the end",
        ),
        ("alert: {critical: {max: \"\"}}", "alert.critical.max", "no value"),
        ("alert: {1: {max: 1}}", "alert", "keys must be strings"),
    ];
    for (alert, key, message) in cases {
        let text = format!("{README_ORDER}{alert}\n");
        assert_eq!(invalid_key(&text), key, "{alert}");
        let error = parse(&text).unwrap_err().to_string();
        assert!(error.contains(message), "{alert}: {error}");
    }
    // `@` cannot start a plain YAML scalar: the YAML itself is refused.
    let unquoted = format!("{README_ORDER}alert: {{warning: {{loss: @1:2}}}}\n");
    assert!(
        matches!(parse(&unquoted), Err(OrderError::Yaml { .. })),
        "{:?}",
        parse(&unquoted)
    );
}

#[test]
fn hostile_alerts_are_refused_with_a_short_message() {
    // A value as large as an order may be: refused, the message quotes only its start.
    let huge = format!(
        "{README_ORDER}alert: {{warning: {{median: \"{}ms\"}}}}\n",
        "9".repeat(60_000)
    );
    let error = parse(&huge).unwrap_err().to_string();
    assert!(
        error.contains("alert.warning.median") && error.len() < 400,
        "{}",
        error.len()
    );
    // Aliases replaying a level into every level and key: the merge-free expansion is bounded
    // by the parser's alias check; a duplicate metric is a YAML error.
    let aliases = format!("{README_ORDER}x: &l {{loss: 1}}\nalert: {{warning: *l, critical: *l}}\n");
    let parsed = parse(&aliases).unwrap();
    assert_eq!(parsed.order.alert.warning, parsed.order.alert.critical);
    let duplicate = format!("{README_ORDER}alert: {{warning: {{loss: 1, loss: 2}}}}\n");
    assert!(matches!(parse(&duplicate), Err(OrderError::Yaml { .. })));
    // Deep nesting below alert: is the YAML parser's refusal, not a stack overflow.
    let deep = format!("{README_ORDER}alert: {}1{}\n", "[".repeat(500), "]".repeat(500));
    assert!(parse(&deep).is_err());
}

//! httping, tcp and exec orders measured end to end by `spoolmon run` against real servers on
//! loopback (python3's http.server) and a real command.

mod common;

use common::*;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http_server(dir: &std::path::Path) -> (Server, u16) {
    let port = free_port();
    let child = Command::new("python3")
        .args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let server = Server(child);
    wait_for("http.server listening", Duration::from_secs(30), None, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (server, port)
}

#[test]
fn httping_tcp_and_exec_orders_are_measured() {
    let base = Base::new();
    let (_server, port) = http_server(base.path());
    let closed = free_port();
    let http = format!("user: t\nstep: 2\npings: 2\nprobe: httping\nhttping:\n    url: http://127.0.0.1:{port}/\n");
    let http_fail =
        format!("user: t\nstep: 2\npings: 2\nprobe: httping\nhttping:\n    url: http://127.0.0.1:{port}/missing\n    http_codes_as_failure: 404\n");
    let tcp = format!("user: t\nstep: 2\npings: 2\nprobe: tcp\ntcp:\n    host: 127.0.0.1\n    port: {port}\n");
    let tcp_closed = format!("user: t\nstep: 2\npings: 2\nprobe: tcp\ntcp:\n    host: 127.0.0.1\n    port: {closed}\n");
    let exec = "user: t\nstep: 2\npings: 3\nprobe: exec\nexec:\n    command: [\"/bin/sh\", \"-c\", \"echo 'seq=1 time=1.5 ms'; echo 'seq=3 time=2.5 ms'\"]\n";
    base.write_order("http/ok", &http);
    base.write_order("http/404", &http_fail);
    base.write_order("tcp/open", &tcp);
    base.write_order("tcp/closed", &tcp_closed);
    base.write_order("exec/sh", exec);
    let daemon = base.start(FAST);
    let expect = [
        ("http/ok", "0"),
        ("http/404", "2"),
        ("tcp/open", "0"),
        ("tcp/closed", "2"),
        ("exec/sh", "1"),
    ];
    for (id, loss) in expect {
        let rel = format!("output/{id}/last_result");
        wait_for(
            &format!("{id} loss {loss}"),
            Duration::from_secs(60),
            Some(&daemon),
            || base.read(&rel).is_some_and(|t| field(&t, "loss") == loss),
        );
    }
    let exec_result = base.read("output/exec/sh/last_result").unwrap();
    assert_eq!(field(&exec_result, "min"), "1.500000e-03", "{exec_result}");
    assert_eq!(field(&exec_result, "max"), "2.500000e-03", "{exec_result}");
    assert_eq!(
        field(&base.read("output/tcp/closed/last_result").unwrap(), "median"),
        "~"
    );
}

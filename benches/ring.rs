//! The forward sink's hash ring (`mode: hash`, `spoolmon::sink::ring`): how evenly 10,000 keys
//! (`prober-<p>/lan/target-<i>`, 7 probers) spread over 3 to 5 destinations, how many move when
//! a destination is added or removed, and what one owner lookup costs.
//!
//! usage: cargo bench --bench ring   (under `cargo test` it runs once, as a smoke test)

use spoolmon::sink::ring::{result_key, Ring};
use std::time::Instant;

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let keys: Vec<Vec<u8>> = (0..10_000)
        .map(|i| {
            let mut key = Vec::new();
            result_key(&format!("prober-{}", i % 7), &format!("lan/target-{i}"), &mut key);
            key
        })
        .collect();
    let destinations = |n: usize| -> Vec<String> { (1..=n).map(|i| format!("10.0.0.{i}:19999")).collect() };
    let owners = |ring: &Ring| -> Vec<usize> { keys.iter().map(|k| ring.owner(k).unwrap()).collect() };
    println!("| destinations | shares of 10,000 keys | largest vs fair | moved when one is added | bound 1/(N+1)+5% | moved when one is removed |");
    println!("|---|---|---|---|---|---|");
    for n in 3..=5 {
        let ring = Ring::new(&destinations(n));
        let before = owners(&ring);
        let mut shares = vec![0usize; n];
        before.iter().for_each(|&o| shares[o] += 1);
        let fair = keys.len() as f64 / n as f64;
        let largest = *shares.iter().max().unwrap() as f64 / fair - 1.0;
        let added = owners(&Ring::new(&destinations(n + 1)));
        let moved_add = (0..keys.len()).filter(|&i| before[i] != added[i]).count();
        let fewer: Vec<String> = destinations(n).into_iter().skip(1).collect();
        let removed = owners(&Ring::new(&fewer));
        let moved_remove = (0..keys.len()).filter(|&i| before[i] != removed[i] + 1).count();
        println!(
            "| {n} | {shares:?} | {:+.1} % | {:.1} % | {:.1} % | {:.1} % (its own share: {:.1} %) |",
            largest * 100.0,
            moved_add as f64 / 100.0,
            (1.0 / (n + 1) as f64 + 0.05) * 100.0,
            moved_remove as f64 / 100.0,
            shares[0] as f64 / 100.0
        );
    }
    let ring = Ring::new(&destinations(5));
    let rounds = if bench { 200 } else { 1 };
    let started = Instant::now();
    let mut sum = 0usize;
    for _ in 0..rounds {
        for key in &keys {
            sum += ring.owner(key).unwrap();
        }
    }
    let per = started.elapsed().as_secs_f64() / (rounds * keys.len()) as f64;
    println!("owner lookup over 5 destinations: {:.0} ns (checksum {sum})", per * 1e9);
}

//! pgoutput → Arrow decoding throughput: messages decoded and appended to the per-table
//! builders, batches taken, exactly as the source task does it (no I/O).
//!
//! `cargo bench --bench decode` prints rows/s for a narrow row
//! (id bigint, int, text, timestamptz, numeric(12,2)) and a 20-column mixed row.

use std::collections::{HashMap, HashSet};

use criterion::{criterion_group, Criterion, Throughput};
use replication::postgres::pgoutput::Decoder;
use replication::postgres::Assembler;
use replication::source::BatchLimits;
use replication::Lsn;

const ROWS: usize = 100_000;

fn relation(columns: &[(&str, u32, i32)]) -> Vec<u8> {
    let mut m = vec![b'R'];
    m.extend_from_slice(&16385u32.to_be_bytes());
    m.extend_from_slice(b"public\0bench\0");
    m.push(b'd');
    m.extend_from_slice(&(columns.len() as i16).to_be_bytes());
    for (i, (name, oid, typmod)) in columns.iter().enumerate() {
        m.push(u8::from(i == 0));
        m.extend_from_slice(name.as_bytes());
        m.push(0);
        m.extend_from_slice(&oid.to_be_bytes());
        m.extend_from_slice(&typmod.to_be_bytes());
    }
    m
}

fn value(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'b');
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn numeric_12_2(v: i64) -> Vec<u8> {
    // v/100 as base-10000 digits: integer part then two decimal digits in one group.
    let int = v / 100;
    let frac = (v % 100) * 100;
    let mut digits = Vec::new();
    let mut i = int;
    while i > 0 {
        digits.insert(0, (i % 10_000) as i16);
        i /= 10_000;
    }
    let weight = digits.len() as i16 - 1;
    digits.push(frac as i16);
    let mut b = Vec::new();
    b.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    b.extend_from_slice(&weight.to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&2u16.to_be_bytes());
    for d in digits {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b
}

fn narrow_insert(id: i64) -> Vec<u8> {
    let mut m = vec![b'I'];
    m.extend_from_slice(&16385u32.to_be_bytes());
    m.push(b'N');
    m.extend_from_slice(&5i16.to_be_bytes());
    value(&mut m, &id.to_be_bytes());
    value(&mut m, &((id % 1000) as i32).to_be_bytes());
    value(&mut m, format!("row {id}").as_bytes());
    value(&mut m, &(800_000_000_000_000i64 + id).to_be_bytes());
    value(&mut m, &numeric_12_2(id * 7 + 12_345));
    m
}

fn wide_insert(id: i64) -> Vec<u8> {
    let mut m = vec![b'I'];
    m.extend_from_slice(&16385u32.to_be_bytes());
    m.push(b'N');
    m.extend_from_slice(&20i16.to_be_bytes());
    for round in 0..4 {
        value(&mut m, &(id + round).to_be_bytes());
        value(&mut m, &((id % 1000) as i32).to_be_bytes());
        value(&mut m, format!("some text value {id}").as_bytes());
        value(&mut m, &(800_000_000_000_000i64 + id).to_be_bytes());
        value(&mut m, &((id as f64) * 0.5).to_be_bytes());
    }
    m
}

fn columns_wide() -> Vec<(&'static str, u32, i32)> {
    let names = [
        "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9", "c10", "c11", "c12", "c13",
        "c14", "c15", "c16", "c17", "c18", "c19",
    ];
    let types = [(20, -1), (23, -1), (25, -1), (1184, -1), (701, -1)];
    names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, types[i % 5].0, types[i % 5].1))
        .collect()
}

fn run(relation: &[u8], inserts: &[Vec<u8>]) -> usize {
    let mut decoder = Decoder::new();
    let mut assembler = Assembler::new(
        BatchLimits {
            max_rows: 100_000,
            max_bytes: 64 << 20,
        },
        true,
        HashSet::new(),
        HashMap::new(),
    );
    let mut begin = vec![b'B'];
    begin.extend_from_slice(&1u64.to_be_bytes());
    begin.extend_from_slice(&0i64.to_be_bytes());
    begin.extend_from_slice(&1u32.to_be_bytes());
    let mut commit = vec![b'C', 0];
    commit.extend_from_slice(&1u64.to_be_bytes());
    commit.extend_from_slice(&2u64.to_be_bytes());
    commit.extend_from_slice(&0i64.to_be_bytes());
    let lsn = Lsn(1);
    assembler
        .apply(decoder.decode(relation).unwrap(), lsn, 0)
        .unwrap();
    let mut rows = 0;
    for chunk in inserts.chunks(1000) {
        assembler
            .apply(decoder.decode(&begin).unwrap(), lsn, 0)
            .unwrap();
        for m in chunk {
            assembler
                .apply(decoder.decode(m).unwrap(), lsn, m.len())
                .unwrap();
        }
        assembler
            .apply(decoder.decode(&commit).unwrap(), lsn, 0)
            .unwrap();
    }
    assembler.flush().unwrap();
    for e in assembler.take_events() {
        rows += e.rows();
    }
    rows
}

/// A workload: its name, the relation message, the insert messages.
type Workload = (&'static str, Vec<u8>, Vec<Vec<u8>>);

/// The two workloads.
fn workloads() -> Vec<Workload> {
    let narrow_rel = relation(&[
        ("id", 20, -1),
        ("n", 23, -1),
        ("note", 25, -1),
        ("at", 1184, -1),
        ("price", 1700, ((12 << 16) | 2) + 4),
    ]);
    let narrow: Vec<_> = (0..ROWS as i64).map(narrow_insert).collect();
    let wide: Vec<_> = (0..ROWS as i64).map(wide_insert).collect();
    vec![
        ("narrow_row", narrow_rel, narrow),
        ("mixed_20_columns", relation(&columns_wide()), wide),
    ]
}

fn bench(c: &mut Criterion) {
    let workloads = workloads();
    for (_, rel, inserts) in &workloads {
        assert_eq!(run(rel, inserts), ROWS);
    }
    let mut group = c.benchmark_group("pgoutput_to_arrow");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    for (name, rel, inserts) in &workloads {
        group.bench_function(*name, |b| b.iter(|| run(rel, inserts)));
    }
    group.finish();
}

criterion_group!(benches, bench);

/// `SLUICE_DECODE_ONCE=1` decodes each workload once and exits: for instruction counts that
/// repeat on a busy machine (`scripts/bench-decode-instructions.sh` runs it under callgrind,
/// counting only inside `run`).
fn main() {
    if std::env::var_os("SLUICE_DECODE_ONCE").is_some() {
        let only = std::env::var("SLUICE_DECODE_ONLY").ok();
        for (name, rel, inserts) in workloads() {
            if only.as_deref().is_none_or(|o| o == name) {
                assert_eq!(run(&rel, &inserts), ROWS, "{name}");
            }
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

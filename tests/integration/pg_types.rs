//! PostgreSQL values that no Delta type holds, and types whose text differs by path: each value
//! written before the initial snapshot (binary COPY) and again after it (streamed, in binary or
//! in text mode) lands identically and exactly, either typed or as NULL plus PostgreSQL's own
//! text in the `<column>__text` companion, and so does an incremental snapshot. Never an error.

use std::collections::HashMap;

use serde_json::Value;
use tokio_postgres::Client;

use crate::support::{admin, ok, ops, run_sluice, Pipeline};

/// Streamed rows repeat the snapshot rows with this added to `id`.
const STREAMED: i64 = 100;

/// Columns and one row per case (PostgreSQL refuses ±Infinity in numeric(p,s), not NaN) (`id`, then the values as SQL). Cases 1-8 each stress the
/// companion in a different way; 9 is ordinary values, 10 all nulls.
const COLUMNS: &str = "id int PRIMARY KEY, d date, ts timestamp, tz timestamptz,
    n38_10 numeric(38,10), n38_0 numeric(38,0), n38_38 numeric(38,38), n5_2 numeric(5,2),
    ints int[], tzs timestamptz[], texts text[], floats float8[], days date[], big numeric";

const CASES: &[&str] = &[
    "1, 'infinity', 'infinity', 'infinity', 1.5, 1, 0.5, 'NaN', '[0:2]={1,2,3}', NULL, NULL, NULL, NULL, 'NaN'",
    "2, '-infinity', '-infinity', '-infinity', -1.5, -1, -0.5, 'NaN', '{{1,2},{3,4}}', NULL, NULL, NULL, NULL, 'Infinity'",
    "3, '5874897-12-31', '294276-12-31 23:59:59.999999', '294276-12-31 23:59:59.999999+00', 0, 0, 0, NULL, '[-1:-1][5:6]={{7,NULL}}', NULL, NULL, NULL, NULL, NULL",
    "4, '0044-03-15 BC', '0001-01-01 00:00:00.5 BC', '0001-01-01 00:00:00+00 BC', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
    "5, '10000-01-01', '12345-06-07 08:09:10', '4714-11-24 00:00:00+00 BC',
        9999999999999999999999999999.9999999999, 99999999999999999999999999999999999999,
        0.99999999999999999999999999999999999999, 999.99,
        '{1,2}', ARRAY['2026-01-02 03:04:05+00', 'infinity']::timestamptz[], NULL, NULL, NULL, NULL",
    "6, '0001-01-01', '0001-01-01 00:00:00', '9999-12-31 23:59:59.999999+00',
        -9999999999999999999999999999.9999999999, -99999999999999999999999999999999999999,
        -0.99999999999999999999999999999999999999, -999.99,
        '{}', '[0:0]={\"2026-01-02 03:04:05.5+00\"}', '[2:3]={\"a b\",\"x\\\"y\"}',
        '{{1e100,1e-5},{-0,NaN}}', '{{2026-01-02,infinity},{NULL,\"0044-03-15 BC\"}}', NULL",
    "7, '2026-01-02', '2026-01-02 03:04:05.678', '2026-01-02 03:04:05.678+00',
        0.0000000001, 1, 0.00000000000000000000000000000000000001, 0.01,
        '{1,NULL,3}', ARRAY['2026-01-02 03:04:05+00', NULL]::timestamptz[],
        ARRAY['a b', '', 'NULL', 'x\"y', 'back\\slash', '{', NULL], '{1.5,2.25,-0}',
        '{2026-01-02,NULL}', 123456789012345678901234567890123456789.5",
    "8, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '{}', '{infinity}', '[1:1]={x}', '[1:2][1:1]={{1},{2}}', '{-infinity}', NULL",
];

/// (id, column) pairs that cannot be typed: they land NULL with their text in the companion.
const COMPANIONS: &[(i64, &str)] = &[
    (1, "d"),
    (1, "ts"),
    (1, "tz"),
    (1, "n5_2"),
    (1, "ints"),
    (2, "d"),
    (2, "ts"),
    (2, "tz"),
    (2, "n5_2"),
    (2, "ints"),
    (3, "d"),
    (3, "ts"),
    (3, "tz"),
    (3, "ints"),
    (4, "d"),
    (4, "ts"),
    (4, "tz"),
    (5, "d"),
    (5, "ts"),
    (5, "tz"),
    (5, "tzs"),
    (6, "tzs"),
    (6, "texts"),
    (6, "floats"),
    (6, "days"),
    (8, "tzs"),
    (8, "floats"),
    (8, "days"),
];

/// Set up `name` with the case table (plus `extra` columns and their values per case),
/// write every case, run the snapshot, write them again, stream, and check both copies.
async fn cases_land_identically_both_ways(name: &str, extra_columns: &str, extra: &[&str]) {
    let db = admin().await;
    let p = Pipeline::new(name, &db).await;
    db.batch_execute(&format!(
        "CREATE TYPE {name}.mood AS ENUM ('ok', 'not ok');
         CREATE TYPE {name}.pair AS (a int, b text);
         CREATE DOMAIN {name}.code AS char(5);
         CREATE DOMAIN {name}.yes AS bool;
         CREATE TYPE {name}.span AS (i interval, t timestamptz);
         CREATE TABLE {name}.vals ({COLUMNS}{extra_columns});
         ALTER TABLE {name}.vals OWNER TO sluice;"
    ))
    .await
    .unwrap();
    let insert = |offset: i64| {
        CASES
            .iter()
            .enumerate()
            .map(|(i, case)| {
                let (id, rest) = case.split_once(',').unwrap();
                let id: i64 = id.parse().unwrap();
                let more = extra.get(i).map_or(String::new(), |e| format!(", {e}"));
                format!(
                    "INSERT INTO {name}.vals VALUES ({}, {rest}{more});",
                    id + offset
                )
            })
            .collect::<String>()
    };
    db.batch_execute(&insert(0)).await.unwrap();
    let config = p.config(&["vals"], "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    db.batch_execute(&insert(STREAMED)).await.unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    // An incremental snapshot reads every row again, through the same select; then an
    // ordinary row makes a batch without any companion.
    let table = format!("{name}.vals");
    ok(run_sluice(&["snapshot", "--table", &table], &config));
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    db.batch_execute(&format!(
        "INSERT INTO {name}.vals (id, d) VALUES (999, '2026-01-02')"
    ))
    .await
    .unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));

    let rows = p.rows("vals");
    let last = rows.last().unwrap();
    assert_eq!(
        (last["id"].as_i64(), last["d"].as_str()),
        (Some(999), Some("2026-01-02"))
    );
    assert!(last["d__text"].is_null());
    let mut versions: HashMap<i64, Vec<&Value>> = HashMap::new();
    for r in &rows[..rows.len() - 1] {
        versions
            .entry(r["id"].as_i64().unwrap())
            .or_default()
            .push(r);
    }
    assert_eq!(versions.len(), 2 * CASES.len(), "{:?}", ops(&rows));
    let ops_of = |id: i64| -> Vec<&str> {
        versions[&id]
            .iter()
            .map(|r| r["_sluice_op"].as_str().unwrap())
            .collect()
    };
    let by_id: HashMap<i64, &Value> = versions.iter().map(|(id, v)| (*id, v[0])).collect();
    let columns = data_columns(&db, name).await;
    let server = server_texts(&db, name, &columns).await;
    for id in 1..=CASES.len() as i64 {
        // The initial snapshot's, the stream's and the incremental snapshot's copies.
        assert_eq!(ops_of(id), ["r", "r"], "case {id}");
        assert_eq!(ops_of(id + STREAMED), ["c", "r"], "case {id}");
        let (snap, streamed) = (by_id[&id], by_id[&(id + STREAMED)]);
        for again in [versions[&id][1], versions[&(id + STREAMED)][1]] {
            for c in &columns {
                let companion = format!("{c}__text");
                assert_eq!(snap[c], again[c], "{c} of case {id}, incremental");
                assert_eq!(
                    snap[&companion], again[&companion],
                    "{companion} of case {id}, incremental"
                );
            }
        }
        for c in &columns {
            let companion = format!("{c}__text");
            assert_eq!(snap[c], streamed[c], "{c} of case {id}");
            assert_eq!(
                snap[&companion], streamed[&companion],
                "{companion} of case {id}"
            );
            let expected_text = COMPANIONS.contains(&(id, c.as_str()));
            if expected_text {
                assert!(snap[c].is_null(), "{c} of case {id}: {}", snap[c]);
                assert_eq!(
                    snap[&companion].as_str(),
                    server[&(id, c.clone())].as_deref(),
                    "{companion} of case {id} is the server's text"
                );
            } else {
                assert!(
                    snap[&companion].is_null(),
                    "{companion} of case {id}: {}",
                    snap[&companion]
                );
            }
        }
    }
    // A few typed values, as a reader sees them.
    let typed = |id: i64, c: &str| by_id[&id][c].clone();
    assert_eq!(
        typed(5, "n38_10"),
        "9999999999999999999999999999.9999999999"
    );
    assert_eq!(typed(5, "n38_0"), "99999999999999999999999999999999999999");
    assert_eq!(
        typed(5, "n38_38"),
        "0.99999999999999999999999999999999999999"
    );
    assert_eq!(
        typed(6, "n38_10"),
        "-9999999999999999999999999999.9999999999"
    );
    assert_eq!(typed(6, "d"), "0001-01-01");
    assert_eq!(typed(7, "ints"), serde_json::json!([1, null, 3]));
    assert_eq!(
        typed(7, "texts"),
        serde_json::json!(["a b", "", "NULL", "x\"y", "back\\slash", "{", null])
    );
    assert_eq!(typed(6, "ints"), serde_json::json!([]));
    assert_eq!(typed(1, "big"), "NaN");
    assert_eq!(by_id[&1]["d__text"], "infinity");
    assert_eq!(by_id[&3]["ts__text"], "294276-12-31 23:59:59.999999");
    assert_eq!(by_id[&3]["tz__text"], "294276-12-31 23:59:59.999999+00");
    assert_eq!(by_id[&1]["ints__text"], "[0:2]={1,2,3}");
    assert_eq!(by_id[&2]["ints__text"], "{{1,2},{3,4}}");
    assert_eq!(
        by_id[&5]["tzs__text"],
        "{\"2026-01-02 03:04:05+00\",infinity}"
    );
    // Every text column is the server's output text, whichever path carried it.
    for (id, row) in &by_id {
        let case = (id - 1) % STREAMED + 1;
        for c in &columns {
            if let Some(text) = row[c].as_str() {
                if is_text_column(c) {
                    assert_eq!(
                        Some(text),
                        server[&(case, c.clone())].as_deref(),
                        "{c} of row {id}"
                    );
                }
            }
        }
    }
}

/// Columns whose Delta type is a string holding the source's text.
fn is_text_column(c: &str) -> bool {
    matches!(
        c,
        "big"
            | "ip"
            | "net"
            | "cash"
            | "code"
            | "pair"
            | "moods"
            | "mac"
            | "bits"
            | "flag"
            | "x"
            | "r"
            | "sp"
            | "ch"
    )
}

/// The table's data columns, in order.
async fn data_columns(db: &Client, schema: &str) -> Vec<String> {
    db.query(
        "SELECT attname::text FROM pg_attribute
          WHERE attrelid = ($1 || '.vals')::regclass AND attnum > 0 AND NOT attisdropped
          ORDER BY attnum",
        &[&schema],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<_, String>(0))
    .filter(|c| c != "id")
    .collect()
}

/// The output-function text of every source value (case ids only), with the replication
/// session's settings.
async fn server_texts(
    db: &Client,
    schema: &str,
    columns: &[String],
) -> HashMap<(i64, String), Option<String>> {
    db.batch_execute(
        "SET DateStyle = 'ISO, YMD'; SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601';
         SET extra_float_digits = 3",
    )
    .await
    .unwrap();
    let mut out = HashMap::new();
    for c in columns {
        let rows = db
            .query(
                &format!(
                    "SELECT id::int8, CASE WHEN \"{c}\" IS DISTINCT FROM NULL THEN format('%s', \"{c}\") END
                       FROM {schema}.vals WHERE id < {STREAMED}"
                ),
                &[],
            )
            .await
            .unwrap();
        for r in rows {
            out.insert((r.get::<_, i64>(0), c.clone()), r.get(1));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn unrepresentable_values_land_as_text_in_binary_mode() {
    cases_land_identically_both_ways("t_pgfid_binary", "", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unrepresentable_values_land_as_text_in_text_mode() {
    // inet has no binary decoder: the whole connection streams text.
    // Columns whose `::text` cast is not their output (inet, cidr, char(n) and bool domains,
    // "char"), and types whose output follows the session's settings (interval, timestamptz
    // inside a composite or a range).
    let extra = [
        "'::1', '10.0.0.0/8', '12.34', 'ab', ROW(1, NULL), ARRAY['ok', 'not ok']::t_pgfid_text.mood[], '08:00:2b:01:02:03', B'101',
         true, '<a>x &amp; y</a>', '[2026-01-02 03:04:05+00,infinity)', ROW('1 day 02:00:00', '2026-01-02 03:04:05+00'), 'a'",
        "'192.168.0.1/24', '::/0', '-0.01', NULL, ROW(NULL, NULL), '{}', NULL, B'',
         false, NULL, 'empty', ROW(NULL, NULL), NULL",
        "NULL, NULL, NULL, 'a   ', NULL, NULL, NULL, NULL, NULL, NULL, NULL, ROW('-1 mons', 'infinity'), NULL",
    ];
    cases_land_identically_both_ways(
        "t_pgfid_text",
        ", ip inet, net cidr, cash money, code t_pgfid_text.code, pair t_pgfid_text.pair,
           moods t_pgfid_text.mood[], mac macaddr, bits varbit, flag t_pgfid_text.yes, x xml,
           r tstzrange, sp t_pgfid_text.span, ch \"char\"",
        &extra,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_identity_full_with_a_primary_key_keys_updates_on_it() {
    let db = admin().await;
    let p = Pipeline::new("t_pgfid_full", &db).await;
    db.batch_execute(
        "CREATE TABLE t_pgfid_full.keyed (id int PRIMARY KEY, v text, d date);
         ALTER TABLE t_pgfid_full.keyed REPLICA IDENTITY FULL;
         ALTER TABLE t_pgfid_full.keyed OWNER TO sluice;
         CREATE TABLE t_pgfid_full.unkeyed (id int, v text);
         ALTER TABLE t_pgfid_full.unkeyed REPLICA IDENTITY FULL;
         ALTER TABLE t_pgfid_full.unkeyed OWNER TO sluice;",
    )
    .await
    .unwrap();
    let config = p.config(&["keyed", "unkeyed"], "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    db.batch_execute(
        "INSERT INTO t_pgfid_full.keyed VALUES (1, 'a'), (2, 'b');
         UPDATE t_pgfid_full.keyed SET v = 'a2' WHERE id = 1;
         UPDATE t_pgfid_full.keyed SET id = 3 WHERE id = 2;
         UPDATE t_pgfid_full.keyed SET id = 4, v = 'a3' WHERE id = 1;
         INSERT INTO t_pgfid_full.unkeyed VALUES (1, 'a');
         UPDATE t_pgfid_full.unkeyed SET v = 'a2' WHERE id = 1;",
    )
    .await
    .unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let keyed = p.rows("keyed");
    assert_eq!(
        ops(&keyed),
        vec![
            ("c".into(), 1),
            ("c".into(), 2),
            ("u".into(), 1),
            ("d".into(), 2),
            ("u".into(), 3),
            ("d".into(), 1),
            ("u".into(), 4),
        ],
        "{keyed:#?}"
    );
    assert_eq!(keyed[2]["v"], "a2");
    assert_eq!(keyed[5]["v"], "a2", "the delete carries the old row");
    // A companion first appearing in a table that exists joins its schema; earlier rows
    // read it as null.
    db.batch_execute("UPDATE t_pgfid_full.keyed SET d = 'infinity' WHERE id = 3")
        .await
        .unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let keyed = p.rows("keyed");
    assert_eq!(ops(&keyed[7..]), vec![("u".into(), 3)]);
    assert!(keyed[7]["d"].is_null());
    assert_eq!(keyed[7]["d__text"], "infinity");
    assert!(keyed[..7].iter().all(|r| r["d__text"].is_null()));
    // Without a primary key every column is the key, as before.
    let unkeyed = p.rows("unkeyed");
    assert_eq!(
        ops(&unkeyed),
        vec![("c".into(), 1), ("d".into(), 1), ("u".into(), 1)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_arrays_of_every_element_type_print_as_array_out() {
    let db = admin().await;
    let p = Pipeline::new("t_pgfid_arrays", &db).await;
    // Two-dimensional (so the companion holds them) arrays of each element type with a
    // binary decoder; the element texts come from Sluice's own formatting of binary values.
    let columns = [
        ("bools", "bool[]", "'{{t,f},{NULL,t}}'"),
        ("i2", "int2[]", "'{{-32768,32767}}'"),
        ("i4", "int4[]", "'{{-2147483648},{2147483647}}'"),
        ("i8", "int8[]", "'{{-9223372036854775808,9223372036854775807}}'"),
        ("f4", "float4[]", "'{{1e6,123456,1.5e-5,-0,NaN,Infinity,-Infinity,3.4028235e38,1e-45}}'"),
        ("f8", "float8[]", "(SELECT array[array_agg(x)] FROM (SELECT (random() - 0.5) * 10 ^ (random() * 600 - 300) AS x FROM generate_series(1, 3000)) r)"),
        ("f4r", "float4[]", "(SELECT array[array_agg(x)] FROM (SELECT ((random() - 0.5) * 10 ^ (random() * 70 - 35))::float4 AS x FROM generate_series(1, 3000)) r)"),
        ("f8s", "float8[]", "'{{0.1,1e15,1e14,123456789012345.6,1e-4,1e-5,5e-324,1.7976931348623157e308}}'"),
        ("nums", "numeric[]", "'{{1.50,-0.0001,NaN,Infinity,-Infinity,100000000000000000000}}'"),
        ("texts", "text[]", "ARRAY[ARRAY['a b', '', 'NULL', 'null', 'x\"y', 'back\\slash', '{', '}', ',', E'tab\\there', 'é']]"),
        ("vcs", "varchar(5)[]", "'{{a,b}}'"),
        ("chars", "char(3)[]", "'{{a,bc}}'"),
        ("names", "name[]", "'{{pg_class,\"two words\"}}'"),
        ("jsons", "json[]", "ARRAY[ARRAY['{\"a\": [1, 2]}'::json, 'null']]"),
        ("jsonbs", "jsonb[]", "ARRAY[ARRAY['{\"b\": 1, \"a\": \"x y\"}'::jsonb, '[]']]"),
        ("byteas", "bytea[]", "ARRAY[ARRAY['\\x00ff'::bytea, '']]"),
        ("dates", "date[]", "'{{2026-01-02,infinity,-infinity,\"0044-03-15 BC\",5874897-12-31}}'"),
        ("times", "time[]", "'{{00:00:00,13:45:00.5,24:00:00,23:59:59.999999}}'"),
        ("tss", "timestamp[]", "'{{2026-01-02 03:04:05.678,infinity,\"0001-01-01 00:00:00 BC\",294276-12-31 23:59:59.999999}}'"),
        ("tzs", "timestamptz[]", "'{{2026-01-02 03:04:05+00,-infinity,1999-12-31 23:59:59.5+00}}'"),
        ("ivs", "interval[]", "'{{1 year 2 mons 3 days 04:05:06.789,-1 mons -1.5 seconds,0,-2 days +3 hours}}'"),
        ("uuids", "uuid[]", "'{{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11,NULL}}'"),
    ];
    let definition: Vec<String> = columns
        .iter()
        .map(|(name, ty, _)| format!("{name} {ty}"))
        .collect();
    db.batch_execute(&format!(
        "CREATE TABLE t_pgfid_arrays.vals (id int PRIMARY KEY, {});
         ALTER TABLE t_pgfid_arrays.vals OWNER TO sluice;",
        definition.join(", ")
    ))
    .await
    .unwrap();
    let values: Vec<&str> = columns.iter().map(|(_, _, v)| *v).collect();
    let insert = |id: i64| {
        format!(
            "INSERT INTO t_pgfid_arrays.vals VALUES ({id}, {});",
            values.join(", ")
        )
    };
    db.batch_execute(&insert(1)).await.unwrap();
    let config = p.config(&["vals"], "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    // The streamed row copies the first (the random floats included).
    db.batch_execute(&format!(
        "INSERT INTO t_pgfid_arrays.vals SELECT id + {STREAMED}, {} FROM t_pgfid_arrays.vals;",
        columns
            .iter()
            .map(|(n, _, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    ))
    .await
    .unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let rows = p.rows("vals");
    assert_eq!(
        ops(&rows),
        vec![("r".into(), 1), ("c".into(), 1 + STREAMED)]
    );
    let names: Vec<String> = columns.iter().map(|(n, _, _)| n.to_string()).collect();
    let server = server_texts(&db, "t_pgfid_arrays", &names).await;
    for row in &rows {
        for c in &names {
            assert!(row[c].is_null(), "{c}: {}", row[c]);
            let landed = row[&format!("{c}__text")].as_str();
            let expected = server[&(1, c.clone())].as_deref();
            if let (Some(l), Some(e)) = (landed, expected) {
                // Name the differing elements, not a 3,000-element line.
                let diff: Vec<_> = l
                    .split(',')
                    .zip(e.split(','))
                    .filter(|(a, b)| a != b)
                    .take(5)
                    .collect();
                assert!(diff.is_empty(), "{c} of row {}: {diff:?}", row["id"]);
            }
            assert_eq!(landed, expected, "{c} of row {}", row["id"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incremental_chunk_keeps_the_companions_of_all_its_batches() {
    let db = admin().await;
    let p = Pipeline::new("t_pgfid_chunk", &db).await;
    db.batch_execute(
        "CREATE TABLE t_pgfid_chunk.t (id int PRIMARY KEY, d date);
         ALTER TABLE t_pgfid_chunk.t OWNER TO sluice;
         INSERT INTO t_pgfid_chunk.t
              SELECT g, CASE WHEN g IN (50, 250) THEN 'infinity'::date ELSE '2026-01-02' END
                FROM generate_series(1, 300) g;",
    )
    .await
    .unwrap();
    // One 300-row chunk read in batches of 100: only the first and the third have a
    // companion.
    let config = p.config(&["t"], "snapshot = \"never\"");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("max_batch_rows = 20000", "max_batch_rows = 100");
    std::fs::write(&config, text).unwrap();
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    ok(run_sluice(
        &["snapshot", "--table", "t_pgfid_chunk.t"],
        &config,
    ));
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    let rows = p.rows("t");
    assert_eq!(rows.len(), 300);
    for r in &rows {
        let infinite = matches!(r["id"].as_i64(), Some(50 | 250));
        assert_eq!(r["d__text"].as_str(), infinite.then_some("infinity"), "{r}");
        assert_eq!(r["d"].is_null(), infinite, "{r}");
    }
}

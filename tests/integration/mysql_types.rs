//! Issue 9, MySQL and MariaDB: no valid source value stops or corrupts a table. Every
//! fixed-length, padded or edge value the server accepts is written before the first run (the
//! snapshot's `SELECT` reads it) and again after it (the binlog carries it), on MariaDB 10.11
//! and MySQL 9.7; both land identically, and exactly: bytes and text against the server's own
//! `HEX()` and text, values its typed column cannot hold as null plus `<column>__text`.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use serde_json::Value;

use crate::mysql_support::{admin_at, exec, MyPipeline, MY_PORT};
use crate::mysql_upstream::MYSQL_PORT;
use crate::support::{ok, run_sluice};

/// Ids of the rows written after the first run: `AFTER + i` repeats row `i`.
const AFTER: usize = 100;

/// One table of a test: its columns and rows (SQL expressions, without the id).
struct Case {
    table: &'static str,
    columns: String,
    rows: Vec<String>,
}

/// Create each case's table in database `name`, write its rows before the first run and again
/// after it, and assert that each row read by the snapshot (op `r`) equals its repeat streamed
/// from the binlog (op `c`) in every column, companions included.
async fn land_both_ways(
    db: &mut mysql_async::Conn,
    port: u16,
    name: &str,
    server_id: u32,
    cases: &[Case],
) -> MyPipeline {
    let p = MyPipeline::new(name, db).await;
    // A lax mode: zero and invalid dates are values the server then accepts.
    exec(
        db,
        "SET SESSION sql_mode = 'ALLOW_INVALID_DATES', time_zone = '+00:00'",
    )
    .await;
    for case in cases {
        exec(
            db,
            &format!(
                "CREATE TABLE {name}.{} (id int PRIMARY KEY, {})",
                case.table, case.columns
            ),
        )
        .await;
    }
    let insert = |case: &Case, offset: usize| -> Vec<String> {
        case.rows
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "INSERT INTO {name}.{} VALUES ({}, {v})",
                    case.table,
                    i + 1 + offset
                )
            })
            .collect()
    };
    for case in cases {
        for sql in insert(case, 0) {
            exec(db, &sql).await;
        }
    }
    let tables: Vec<&str> = cases.iter().map(|c| c.table).collect();
    let config = p.config_with(&tables, port, server_id, "");
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    for case in cases {
        for sql in insert(case, AFTER) {
            exec(db, &sql).await;
        }
    }
    ok(run_sluice(&["run", "--until", "caught-up"], &config));
    for case in cases {
        let all = p.rows(case.table);
        assert_eq!(all.len(), 2 * case.rows.len(), "table {}", case.table);
        for i in 1..=case.rows.len() {
            let read = row(&all, i);
            let streamed = row(&all, i + AFTER);
            assert_eq!(
                (read["_sluice_op"].as_str(), streamed["_sluice_op"].as_str()),
                (Some("r"), Some("c"))
            );
            for (k, v) in read.as_object().unwrap() {
                if !k.starts_with("_sluice") && k != "id" {
                    assert_eq!(
                        v, &streamed[k],
                        "{}.{k} row {i}: snapshot and binlog differ",
                        case.table
                    );
                }
            }
        }
    }
    p
}

fn row(rows: &[Value], id: usize) -> &Value {
    rows.iter()
        .find(|r| r["id"].as_u64() == Some(id as u64))
        .unwrap_or_else(|| panic!("row {id} missing"))
}

/// The bytes of a binary value as the reader prints it (Python's `str(bytes)`), in hex.
fn hex_of(value: &Value) -> Option<String> {
    let text = value.as_str()?;
    let inner = text
        .strip_prefix("b'")
        .or_else(|| text.strip_prefix("b\""))?;
    let inner = &inner[..inner.len() - 1];
    let mut out = Vec::new();
    let mut chars = inner.bytes();
    while let Some(c) = chars.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(b'x') => {
                let hi = chars.next().unwrap() as char;
                let lo = chars.next().unwrap() as char;
                out.push(u8::from_str_radix(&format!("{hi}{lo}"), 16).unwrap());
            }
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(other) => out.push(other),
            None => panic!("bad bytes {text}"),
        }
    }
    Some(out.iter().map(|b| format!("{b:02X}")).collect())
}

/// Assert that `columns` of `table` hold exactly the server's bytes (`HEX(column)`), in the
/// rows read by the snapshot and in those streamed.
async fn bytes_match_source(
    p: &MyPipeline,
    db: &mut mysql_async::Conn,
    table: &str,
    columns: &[&str],
) {
    let lake = p.rows(table);
    for column in columns {
        let source: BTreeMap<usize, Option<String>> = db
            .query(format!(
                "SELECT id, HEX(`{column}`) FROM {}.{table}",
                p.name
            ))
            .await
            .unwrap()
            .into_iter()
            .collect();
        for (id, hex) in &source {
            assert_eq!(
                hex_of(&row(&lake, *id)[*column]),
                *hex,
                "{table}.{column} row {id}: bytes differ from the source"
            );
        }
    }
}

/// Assert that text `columns` of `table` hold exactly the server's text.
async fn text_matches_source(
    p: &MyPipeline,
    db: &mut mysql_async::Conn,
    table: &str,
    columns: &[&str],
) {
    let lake = p.rows(table);
    for column in columns {
        let source: BTreeMap<usize, Option<String>> = db
            .query(format!(
                "SELECT id, CAST(`{column}` AS CHAR) FROM {}.{table}",
                p.name
            ))
            .await
            .unwrap()
            .into_iter()
            .collect();
        for (id, text) in &source {
            assert_eq!(
                row(&lake, *id)[*column].as_str(),
                text.as_deref(),
                "{table}.{column} row {id}: text differs from the source"
            );
        }
    }
}

fn strings(rows: &[&str]) -> Vec<String> {
    rows.iter().map(|r| r.to_string()).collect()
}

/// Fixed-length and padded strings: binary(n) keeps its trailing zero bytes from the binlog
/// too; CHAR in binary and multi-byte charsets (a 400-byte char(100) takes a 2-byte length).
fn fixed() -> Case {
    Case {
        table: "fixed",
        columns: "b4 binary(4), cb char(4) CHARACTER SET binary, c4 char(4) COLLATE utf8mb4_bin,
                  c100 char(100) CHARACTER SET utf8mb4, b255 binary(255),
                  l64 char(64) CHARACTER SET latin1, vb varbinary(300)"
            .into(),
        rows: strings(&[
            "x'0100', x'0100', 'ab', REPEAT('𝄞', 100), x'01', 'é', x'0100'",
            "x'00000000', x'00', '', '', x'', '', x''",
            "x'01020304', x'FFFFFFFF', '𝄞𝄞𝄞𝄞', 'x  ', REPEAT(x'FF', 255), REPEAT('é', 64), REPEAT(x'00', 300)",
            "x'', x'000001', 'a b', 'é𝄞', x'0000000000000000000001', 'x', x'00'",
            "NULL, NULL, NULL, NULL, NULL, NULL, NULL",
        ]),
    }
}

/// Bits of every width, years, enum/set beyond one byte, decimals at their edges, floats.
/// `scale`: the server's largest decimal scale (`d3838` is decimal(scale, scale)).
fn numbers(scale: usize) -> Case {
    let labels = |n: usize, p: &str| -> String {
        (1..=n)
            .map(|i| format!("'{p}{i}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let d65 = format!("{}.{}", "9".repeat(35), "9".repeat(30));
    let d3838 = format!("0.{}", "9".repeat(scale));
    Case {
        table: "numbers",
        columns: format!(
            "b1 bit(1), b7 bit(7), b8 bit(8), b9 bit(9), b63 bit(63), b64 bit(64), y year,
             tu tinyint unsigned, bu bigint unsigned, e enum({}), st set({}), d38 decimal(38,0),
             d3838 decimal({scale},{scale}), d65 decimal(65,30), d1 decimal(1,0), d10 decimal(10,10),
             dz decimal(10,3), f float, d double, mu mediumint unsigned",
            labels(300, "l"),
            labels(64, "s")
        ),
        rows: vec![
            format!(
                "1, 127, 255, 511, 9223372036854775807, 18446744073709551615, 2155, 255,
                 18446744073709551615, 'l300', 18446744073709551615, {n38}, {d3838}, {d65}, 9,
                 0.9999999999, 0.000, 3.40282e38, 1.7976931348623157e308, 16777215",
                n38 = "9".repeat(38)
            ),
            format!(
                "0, 0, 0, 0, 0, 0, 1901, 0, 0, 'l1', '', -{n38}, -{d3838}, -{d65}, -9,
                 -0.9999999999, -0.500, -3.40282e38, -1.7976931348623157e308, 0",
                n38 = "9".repeat(38)
            ),
            format!(
                "1, 64, 128, 256, 4611686018427387904, 9223372036854775808, 0, 1, 1, 'l256',
                 's1,s64', 0, 0.{z}1, 0.{z30}1, 0, 0.0000000001, 0.001, 1.17549e-38,
                 2.2250738585072014e-308, 1",
                z = "0".repeat(scale - 1),
                z30 = "0".repeat(29)
            ),
            // An invalid label under a lax sql_mode is the error value '' (index 0).
            "0, 1, 1, 1, 1, 1, 2000, 7, 7, 'no such label', 's2', 1, 0.5, 1.5, 1, 0.5, 1.5, 0,
             0, 7"
                .into(),
            ["NULL"; 20].join(", "),
        ],
    }
}

/// TIME extremes, DATETIME/TIMESTAMP at every fsp, zero and invalid values.
fn times() -> Case {
    let mut columns = vec!["t0 time, t1 time(1), t6 time(6)".to_string()];
    for fsp in 0..=6 {
        columns.push(format!(
            "dt{fsp} datetime({fsp}), ts{fsp} timestamp({fsp}) NULL"
        ));
    }
    columns.push("d date".into());
    let each =
        |f: &dyn Fn(usize) -> String| -> String { (0..=6).map(f).collect::<Vec<_>>().join(", ") };
    let frac = |fsp: usize, digit: &str| {
        if fsp == 0 {
            String::new()
        } else {
            format!(".{}", digit.repeat(fsp))
        }
    };
    Case {
        table: "times",
        columns: columns.join(", "),
        rows: vec![
            format!(
                "'838:59:59', '-00:00:00.5', '-838:59:59.000000', {}, '9999-12-31'",
                each(&|f| format!(
                    "'9999-12-31 23:59:59{0}', '2038-01-19 03:14:07{0}'",
                    frac(f, "9")
                ))
            ),
            format!(
                "'-838:59:59', '838:59:59.9', '838:59:59.999999', {}, '1000-01-01'",
                each(&|f| format!(
                    "'1000-01-01 00:00:00{0}', '1970-01-01 00:00:01{0}'",
                    frac(f, "1")
                ))
            ),
            // Zero values, a year-0 date (outside Delta's range) and an impossible datetime.
            format!(
                "'00:00:00', '-00:00:00.1', '-00:00:00.000001', {}, '0000-01-01'",
                each(&|f| format!(
                    "'{}', '0000-00-00 00:00:00'",
                    if f % 2 == 0 {
                        "0000-00-00 00:00:00".to_string()
                    } else {
                        format!("2026-02-30 12:34:56{}", frac(f, "5"))
                    }
                ))
            ),
            ["NULL"; 18].join(", "),
        ],
    }
}

/// 4-byte characters, empty versus NULL, long values, and charsets Sluice does not decode.
fn texts() -> Case {
    Case {
        table: "texts",
        columns: "u8 varchar(20) CHARACTER SET utf8mb4, tx text, lb longblob, lt longtext,
                  g varchar(10) CHARACTER SET gbk, u2 varchar(10) CHARACTER SET ucs2,
                  u16 varchar(10) CHARACTER SET utf16, u32 char(3) CHARACTER SET utf32,
                  w char(5) CHARACTER SET cp1251, el enum('é','ü') CHARACTER SET latin1,
                  sl set('é','ü') CHARACTER SET latin1,
                  eq enum('a\\\\b', 'it''s', 'c,d', 'nl\\nx', 'par)', ')'),
                  sq set('a\\\\b', 'it''s', 'nl\\nx', 'par)')"
            .into(),
        rows: strings(&[
            "'𝄞😀', 'a😀b', REPEAT(x'00FF', 2000000), REPEAT('𝄞', 300000), '中文', '中文', '𝄞', 'a𝄞', 'Жж', 'ü', 'é,ü', 'a\\\\b', 'a\\\\b,nl\\nx,par)'",
            "'', '', x'', '', '', '', '', '', '', 'é', '', 'nl\\nx', 'it''s'",
            "'', '', x'', '', '', '', '', '', '', 'é', '', ')', ''",
            "'', '', x'', '', '', '', '', '', '', 'é', '', 'c,d', 'par)'",
            "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL",
        ]),
    }
}

/// Every table both servers share; assertions on their exact values.
async fn shared_cases(
    port: u16,
    name: &str,
    server_id: u32,
    scale: usize,
    extra: Vec<Case>,
) -> MyPipeline {
    let mut db = admin_at(port).await;
    let mut cases = vec![fixed(), numbers(scale), times(), texts()];
    cases.extend(extra);
    let p = land_both_ways(&mut db, port, name, server_id, &cases).await;

    // binary(n): the trailing zero bytes the binlog strips are back.
    let fixed = p.rows("fixed");
    assert_eq!(hex_of(&row(&fixed, 1 + AFTER)["b4"]).unwrap(), "01000000");
    assert_eq!(hex_of(&row(&fixed, 2 + AFTER)["cb"]).unwrap(), "00000000");
    bytes_match_source(&p, &mut db, "fixed", &["b4", "cb", "b255", "vb"]).await;
    text_matches_source(&p, &mut db, "fixed", &["c4", "c100", "l64"]).await;

    let numbers = p.rows("numbers");
    let first = row(&numbers, 1 + AFTER);
    for (column, want) in [
        ("b1", Value::from(1)),
        ("b7", 127.into()),
        ("b8", 255.into()),
        ("b9", 511.into()),
        ("b63", 9223372036854775807i64.into()),
        ("b64", "18446744073709551615".into()),
        ("y", 2155.into()),
        ("tu", 255.into()),
        ("bu", "18446744073709551615".into()),
        ("e", "l300".into()),
        ("d38", "9".repeat(38).into()),
        ("d3838", format!("0.{}", "9".repeat(scale)).into()),
        (
            "d65",
            format!("{}.{}", "9".repeat(35), "9".repeat(30)).into(),
        ),
        ("d1", "9".into()),
        ("d10", "0.9999999999".into()),
        ("d", 1.7976931348623157e308.into()),
        ("mu", 16777215.into()),
    ] {
        assert_eq!(first[column], want, "numbers.{column}");
    }
    let all: Vec<String> = (1..=64).map(|i| format!("s{i}")).collect();
    assert_eq!(first["st"], all.join(","));
    assert_eq!(row(&numbers, 2)["y"], 1901);
    assert_eq!(
        row(&numbers, 2)["d65"],
        format!("-{}.{}", "9".repeat(35), "9".repeat(30))
    );
    assert_eq!(row(&numbers, 3)["y"], 0, "YEAR 0000");
    assert_eq!(row(&numbers, 3)["st"], "s1,s64");
    assert_eq!(row(&numbers, 3)["b64"], "9223372036854775808");
    assert_eq!(row(&numbers, 4)["e"], "", "the invalid-enum value");
    text_matches_source(&p, &mut db, "numbers", &["d65", "st", "e"]).await;

    let times = p.rows("times");
    let t = |id: usize, column: &str| row(&times, id)[column].clone();
    for id in [1, 1 + AFTER] {
        assert_eq!(t(id, "t0"), "838:59:59");
        assert_eq!(t(id, "t1"), "-00:00:00.500000");
        assert_eq!(t(id, "t6"), "-838:59:59");
        assert_eq!(t(id, "dt6"), "9999-12-31 23:59:59.999999");
        assert_eq!(t(id, "ts6"), "2038-01-19 03:14:07.999999+00:00");
        assert_eq!(t(id, "ts1"), "2038-01-19 03:14:07.900000+00:00");
        assert_eq!(t(id, "dt0"), "9999-12-31 23:59:59");
    }
    assert_eq!(t(2, "t0"), "-838:59:59");
    // MariaDB keeps the fraction past 838:59:59; MySQL clips to 838:59:59.
    let top = t(2, "t6");
    assert!(top == "838:59:59.999999" || top == "838:59:59", "{top}");
    assert_eq!(t(3, "t1"), "-00:00:00.100000");
    assert_eq!(t(3, "t6"), "-00:00:00.000001");
    for id in [3, 3 + AFTER] {
        assert!(t(id, "d").is_null());
        assert_eq!(t(id, "d__text"), "0000-01-01");
        for fsp in 0..=6 {
            assert!(t(id, &format!("ts{fsp}")).is_null());
            assert_eq!(t(id, &format!("ts{fsp}__text")), "0000-00-00 00:00:00");
            let want = if fsp % 2 == 0 {
                "0000-00-00 00:00:00".to_string()
            } else {
                format!("2026-02-30 12:34:56.{:0<6}", "5".repeat(fsp))
            };
            assert!(t(id, &format!("dt{fsp}")).is_null());
            assert_eq!(t(id, &format!("dt{fsp}__text")), want.as_str(), "dt{fsp}");
        }
    }
    for id in [1, 2, 4] {
        assert!(t(id, "d__text").is_null() && t(id, "ts3__text").is_null());
    }
    // (The server prints TIME(n) with all n digits; Sluice prints a fraction only when there is one.)
    text_matches_source(&p, &mut db, "times", &["t0"]).await;

    let texts = p.rows("texts");
    assert_eq!(row(&texts, 1 + AFTER)["u8"], "𝄞😀");
    assert_eq!(row(&texts, 2 + AFTER)["u8"], "", "empty is not null");
    assert!(row(&texts, 5 + AFTER)["u8"].is_null());
    assert_eq!(row(&texts, 1)["eq"], "a\\b");
    assert_eq!(row(&texts, 1)["sq"], "a\\b,nl\nx,par)");
    assert_eq!(row(&texts, 2)["eq"], "nl\nx");
    assert_eq!(row(&texts, 3)["eq"], ")");
    assert_eq!(row(&texts, 1 + AFTER)["el"], "ü");
    assert_eq!(row(&texts, 1 + AFTER)["sl"], "é,ü");
    assert_eq!(hex_of(&row(&texts, 1 + AFTER)["g"]).unwrap(), "D6D0CEC4");
    assert_eq!(hex_of(&row(&texts, 1 + AFTER)["u16"]).unwrap(), "D834DD1E");
    assert_eq!(hex_of(&row(&texts, 1 + AFTER)["w"]).unwrap(), "C6E6");
    bytes_match_source(&p, &mut db, "texts", &["lb", "g", "u2", "u16", "u32", "w"]).await;
    let text = ["u8", "tx", "lt", "el", "sl", "eq", "sq"];
    text_matches_source(&p, &mut db, "texts", &text).await;

    p
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_types_mariadb_land_exactly_from_snapshot_and_binlog() {
    // MariaDB's inet6 and uuid: binary(16) in the binlog, selected as their 16 bytes.
    let maria = Case {
        table: "maria",
        columns: "i6 inet6, u uuid".into(),
        rows: strings(&[
            "'::1', '123e4567-e89b-12d3-a456-426614174000'",
            "'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffffffff-ffff-ffff-ffff-ffffffffffff'",
            "'::', '00000000-0000-0000-0000-000000000000'",
            "'2001:db8::ff00:42:8300', '6ccd780c-baba-1026-9564-5b8c65602400'",
            "NULL, NULL",
        ]),
    };
    let p = shared_cases(MY_PORT, "t_myfid_maria", 7901, 38, vec![maria]).await;
    let rows = p.rows("maria");
    for id in [1, 1 + AFTER] {
        assert_eq!(
            hex_of(&row(&rows, id)["i6"]).unwrap(),
            "00000000000000000000000000000001"
        );
        assert_eq!(
            hex_of(&row(&rows, id)["u"]).unwrap(),
            "123E4567E89B12D3A456426614174000"
        );
    }
    for id in [4, 4 + AFTER] {
        assert_eq!(
            hex_of(&row(&rows, id)["i6"]).unwrap(),
            "20010DB8000000000000FF0000428300"
        );
        assert_eq!(
            hex_of(&row(&rows, id)["u"]).unwrap(),
            "6CCD780CBABA102695645B8C65602400"
        );
    }
    assert!(row(&rows, 5 + AFTER)["u"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_types_mysql_land_exactly_from_snapshot_and_binlog() {
    // Binary JSON: big integers, doubles, decimals, escapes, nesting, large documents.
    let big_array = format!(
        "'[{}1]'",
        "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\", ".repeat(3000)
    );
    let big_object = format!(
        "'{{{}}}'",
        (0..4000)
            .map(|i| format!("\"key{i}\": [{i}, \"v{i}\"]"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let json = Case {
        table: "json",
        columns: "j json".into(),
        rows: vec![
            "JSON_OBJECT('big', 18446744073709551615, 'neg', -9223372036854775808,
                'max', 1.7976931348623157e308, 'tiny', 5e-324, 'dbl', 0.1e0, 'dec', 0.1,
                'negzero', -0.0e0, 'int', 12345678901234567890,
                's', CONCAT('quote \" backslash ', CHAR(92), ' nl ', CHAR(10), ' tab ', CHAR(9),
                            ' ctl ', CHAR(1), ' é 𝄞 /'),
                'nested', CAST('{\"a\": [[[[{\"b\": [null, true, false, {}, []]}]]]]}' AS JSON))"
                .into(),
            big_array,
            big_object,
            "'\"just a string\"'".into(),
            "'12345678901234567890'".into(),
            "'[]'".into(),
            "'{}'".into(),
            "'null'".into(),
            "'-1.5e300'".into(),
            "NULL".into(),
        ],
    };
    // VECTOR (MySQL 9): its float32s as bytes.
    let vector = Case {
        table: "vector",
        columns: "v vector(3), big vector(2000)".into(),
        rows: strings(&[
            "STRING_TO_VECTOR('[1, 2.5, -3.4028235e38]'), STRING_TO_VECTOR(CONCAT('[', REPEAT('1.5, ', 1999), '0]'))",
            "NULL, NULL",
        ]),
    };
    let p = shared_cases(MYSQL_PORT, "t_myfid_mysql", 7902, 30, vec![json, vector]).await;
    let mut db = admin_at(MYSQL_PORT).await;
    text_matches_source(&p, &mut db, "json", &["j"]).await;
    bytes_match_source(&p, &mut db, "vector", &["v", "big"]).await;
}

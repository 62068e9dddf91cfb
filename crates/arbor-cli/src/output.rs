//! Human-readable rendering of API JSON: borderless, column-aligned tables
//! like the product CLI's, so they read well and still `grep`/`awk` easily.

use comfy_table::{presets::NOTHING, ContentArrangement, Table};
use serde_json::Value;

/// A string field, or `-` when absent.
fn s(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => "-".into(),
    }
}

/// `2026-11-25T11:30:00.123Z` → `2026-11-25 11:30:00Z`: seconds are enough
/// for a person; other shapes are shown as they came.
pub fn short_time(t: &str) -> String {
    let b = t.as_bytes();
    let looks_rfc3339 = b.len() >= 19 && b[4] == b'-' && b[10] == b'T' && b[13] == b':';
    if !looks_rfc3339 {
        return t.to_string();
    }
    let zone = if t.ends_with('Z') {
        "Z".to_string()
    } else {
        // Keep a numeric offset such as +02:00.
        t[19..].find(['+', '-']).map(|i| t[19 + i..].to_string()).unwrap_or_default()
    };
    format!("{} {}{zone}", &t[..10], &t[11..19])
}

/// `k=v, k2=v2`, sorted by key, or `-`.
pub fn metadata_cell(v: &Value) -> String {
    match v.get("metadata").and_then(Value::as_object) {
        Some(m) if !m.is_empty() => {
            let mut pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                .collect();
            pairs.sort();
            pairs.join(", ")
        }
        _ => "-".into(),
    }
}

/// `alias` when the sandbox has one, else its `templateID`.
fn template_cell(v: &Value) -> String {
    match s(v, "alias").as_str() {
        "-" => s(v, "templateID"),
        alias => alias.to_string(),
    }
}

fn mem_cell(v: &Value) -> String {
    match s(v, "memoryMB").as_str() {
        "-" => "-".into(),
        mb => format!("{mb} MiB"),
    }
}

/// Renders rows under `header` (no header line when it is empty).
fn render(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table.load_preset(NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    if !header.is_empty() {
        table.set_header(header.to_vec());
    }
    for row in rows {
        table.add_row(row);
    }
    for col in table.column_iter_mut() {
        col.set_padding((0, 2));
    }
    // comfy-table pads the last column too; drop that trailing space.
    table.lines().map(|l| l.trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

/// The table of `arbor sandbox list`.
pub fn sandbox_table(items: &[Value]) -> String {
    let rows = items
        .iter()
        .map(|v| {
            vec![
                s(v, "sandboxID"),
                template_cell(v),
                short_time(&s(v, "startedAt")),
                short_time(&s(v, "endAt")),
                s(v, "state"),
                s(v, "cpuCount"),
                mem_cell(v),
                metadata_cell(v),
            ]
        })
        .collect();
    render(&["SANDBOX ID", "TEMPLATE", "STARTED", "END AT", "STATE", "CPU", "MEM", "METADATA"], rows)
}

/// The key/value view of `arbor sandbox info`.
pub fn detail_table(v: &Value) -> String {
    let mut rows = vec![vec!["SANDBOX ID".into(), s(v, "sandboxID")], vec!["TEMPLATE".into(), s(v, "templateID")]];
    if s(v, "alias") != "-" {
        rows.push(vec!["ALIAS".into(), s(v, "alias")]);
    }
    rows.extend([
        vec!["STATE".into(), s(v, "state")],
        vec!["STARTED".into(), short_time(&s(v, "startedAt"))],
        vec!["END AT".into(), short_time(&s(v, "endAt"))],
        vec!["CPU".into(), s(v, "cpuCount")],
        vec!["MEM".into(), mem_cell(v)],
        vec![
            "DISK".into(),
            match s(v, "diskSizeMB").as_str() {
                "-" => "-".into(),
                mb => format!("{mb} MiB"),
            },
        ],
        vec!["ENVD VERSION".into(), s(v, "envdVersion")],
        vec!["METADATA".into(), metadata_cell(v)],
    ]);
    render(&[], rows)
}

/// MiB from `memUsedMiB`-style fields, else from byte counts (`memUsed`).
fn mib(v: &Value, mib_key: &str, bytes_key: &str) -> String {
    if let Some(n) = v.get(mib_key).and_then(Value::as_f64) {
        return format!("{n:.0}");
    }
    match v.get(bytes_key).and_then(Value::as_f64) {
        Some(b) => format!("{:.0}", b / (1024.0 * 1024.0)),
        None => "-".into(),
    }
}

/// The table of `arbor sandbox metrics`.
pub fn metrics_table(items: &[Value]) -> String {
    let rows = items
        .iter()
        .map(|m| {
            vec![
                short_time(&s(m, "timestamp")),
                s(m, "cpuCount"),
                m.get("cpuUsedPct").and_then(Value::as_f64).map(|p| format!("{p:.1}")).unwrap_or_else(|| "-".into()),
                mib(m, "memUsedMiB", "memUsed"),
                mib(m, "memTotalMiB", "memTotal"),
            ]
        })
        .collect();
    render(&["TIMESTAMP", "CPU", "CPU %", "MEM USED MiB", "MEM TOTAL MiB"], rows)
}

/// A template's name: its first name, else alias, else id.
fn template_name(v: &Value) -> String {
    ["names", "aliases"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_array).and_then(|a| a.first()).and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| s(v, "name"))
}

/// The table of `arbor template list`.
pub fn template_table(items: &[Value]) -> String {
    let rows = items
        .iter()
        .map(|v| {
            vec![
                template_name(v),
                s(v, "version"),
                s(v, "templateID"),
                s(v, "buildStatus"),
                s(v, "cpuCount"),
                mem_cell(v),
                s(v, "versions"),
                short_time(&s(v, "updatedAt")),
            ]
        })
        .collect();
    render(&["NAME", "VERSION", "TEMPLATE ID", "STATUS", "CPU", "MEM", "VERSIONS", "UPDATED"], rows)
}

/// The view of `arbor template info`: the template, then its versions.
pub fn template_detail(v: &Value) -> String {
    let rows = vec![
        vec!["NAME".into(), template_name(v)],
        vec!["TEMPLATE ID".into(), s(v, "templateID")],
        vec!["LATEST VERSION".into(), s(v, "version")],
        vec!["CPU".into(), s(v, "cpuCount")],
        vec!["MEM".into(), mem_cell(v)],
        vec!["CREATED".into(), short_time(&s(v, "createdAt"))],
        vec!["UPDATED".into(), short_time(&s(v, "updatedAt"))],
    ];
    let builds: Vec<Vec<String>> = v
        .get("builds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|b| {
            vec![
                s(b, "version"),
                s(b, "buildID"),
                s(b, "status"),
                s(b, "cpuCount"),
                mem_cell(b),
                s(b, "layers"),
                s(b, "inUse"),
                short_time(&s(b, "createdAt")),
                s(b, "startCmd"),
            ]
        })
        .collect();
    let head = ["VERSION", "BUILD ID", "STATUS", "CPU", "MEM", "LAYERS", "IN USE", "CREATED", "START CMD"];
    format!("{}\n\n{}", render(&[], rows), render(&head, builds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sandbox_table_has_the_product_columns() {
        let items = vec![
            json!({"sandboxID":"sbx1","templateID":"base","startedAt":"2026-11-25T11:30:00.123456Z",
                   "endAt":"2026-11-25T11:35:00Z","state":"running","cpuCount":2,"memoryMB":512,
                   "metadata":{"user":"ann","env":"dev"}}),
            json!({"sandboxID":"sbx-two","templateID":"t1","alias":"python","startedAt":"x","endAt":"2026-11-25T11:35:00+02:00",
                   "state":"paused","cpuCount":1,"memoryMB":1024}),
        ];
        let expected = "\
SANDBOX ID  TEMPLATE  STARTED               END AT                     STATE    CPU  MEM       METADATA
sbx1        base      2026-11-25 11:30:00Z  2026-11-25 11:35:00Z       running  2    512 MiB   env=dev, user=ann
sbx-two     python    x                     2026-11-25 11:35:00+02:00  paused   1    1024 MiB  -";
        assert_eq!(sandbox_table(&items), expected);
    }

    #[test]
    fn empty_list_is_just_the_header() {
        assert_eq!(sandbox_table(&[]), "SANDBOX ID  TEMPLATE  STARTED  END AT  STATE  CPU  MEM  METADATA");
    }

    #[test]
    fn detail_and_metrics() {
        let d = detail_table(&json!({"sandboxID":"s","templateID":"base","state":"running","cpuCount":1,
                                     "memoryMB":256,"diskSizeMB":1024,"envdVersion":"0.6.4"}));
        assert!(d.starts_with("SANDBOX ID    s\nTEMPLATE      base\nSTATE         running\n"), "{d}");
        assert!(d.contains("DISK          1024 MiB"));
        let m = metrics_table(&[
            json!({"timestamp":"2026-11-25T11:30:02Z","cpuCount":2,"cpuUsedPct":12.345,"memUsedMiB":100,"memTotalMiB":512}),
            json!({"timestamp":"2026-11-25T11:30:04Z","cpuCount":2,"cpuUsedPct":0,"memUsed":2097152,"memTotal":536870912}),
        ]);
        let expected = "\
TIMESTAMP             CPU  CPU %  MEM USED MiB  MEM TOTAL MiB
2026-11-25 11:30:02Z  2    12.3   100           512
2026-11-25 11:30:04Z  2    0.0    2             512";
        assert_eq!(m, expected);
    }

    #[test]
    fn template_tables() {
        let items = [json!({"templateID":"t1","names":["app"],"version":3,"versions":3,"buildStatus":"ready",
                            "cpuCount":2,"memoryMB":1024,"updatedAt":"2026-11-25T11:30:00Z"})];
        let expected = "\
NAME  VERSION  TEMPLATE ID  STATUS  CPU  MEM       VERSIONS  UPDATED
app   3        t1           ready   2    1024 MiB  3         2026-11-25 11:30:00Z";
        assert_eq!(template_table(&items), expected);
        let d = template_detail(&json!({"templateID":"t1","aliases":["app"],"version":2,"builds":[
            {"version":1,"buildID":"b1","status":"ready","layers":4,"inUse":0},
            {"version":2,"buildID":"b2","status":"error","startCmd":"srv --port 80"}]}));
        assert!(d.starts_with("NAME            app\nTEMPLATE ID     t1\nLATEST VERSION  2\n"), "{d}");
        assert!(d.contains("\n\nVERSION  BUILD ID  STATUS"), "{d}");
        assert!(d.ends_with("2        b2        error   -    -    -       -       -        srv --port 80"), "{d}");
    }
}

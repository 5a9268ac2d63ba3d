//! `phip bench mpi --scale N`: the patient index's blocking and scoring at population scale,
//! on synthetic residents (common Chinese surnames and given-name characters, birth dates over
//! 90 years, GB/T 2260 counties, mobile numbers), so the figures show how blocking keeps each
//! query to a handful of comparisons when millions of records share names.

use std::time::Instant;

use phip_mpi::{IndexConfig, MatchIndex, MatchRecord, Model};
use serde_json::{json, Value};

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭",
    "何", "高", "林", "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾",
    "肖", "田", "董", "袁", "潘", "于", "蒋", "蔡", "余", "杜", "叶", "程", "苏", "魏", "吕", "丁",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀", "霞", "平", "刚", "桂", "英", "华", "玉", "兰", "萍", "红", "建", "国", "文", "志",
    "海", "燕", "鹏", "辉", "宇", "婷", "雪", "琳", "晨", "浩", "思", "佳", "欣", "怡", "俊", "博",
];
const COUNTIES: &[&str] = &[
    "110101", "110105", "110108", "310101", "310104", "310115", "440103", "440106", "440305",
    "320102", "320106", "330102", "330106", "420102", "420106", "510104", "510107", "610102",
];

/// SplitMix64: a tiny deterministic generator, so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn resident(rng: &mut Rng) -> Value {
    let family = rng.pick(SURNAMES);
    let given: String = if matches!(rng.next() % 3, 0) {
        rng.pick(GIVEN).to_owned()
    } else {
        format!("{}{}", rng.pick(GIVEN), rng.pick(GIVEN))
    };
    let year = 1935 + rng.next() % 90;
    let month = 1 + rng.next() % 12;
    let day = 1 + rng.next() % 28;
    json!({
        "resourceType": "Patient",
        "name": [{"text": format!("{family}{given}"), "family": family, "given": [given]}],
        "gender": if matches!(rng.next() % 2, 0) { "male" } else { "female" },
        "birthDate": format!("{year}-{month:02}-{day:02}"),
        "telecom": [{"system": "phone", "value": format!("13{:09}", rng.next() % 1_000_000_000)}],
        "address": [{"district": rng.pick(COUNTIES), "line": [format!("{}号", rng.next() % 300)]}],
    })
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Runs the scale benchmark and prints its figures.
pub fn run(records: usize) -> anyhow::Result<()> {
    let before = rss_mib();
    let mut rng = Rng(2026);
    let mut index = MatchIndex::new(Model::default(), IndexConfig::default());
    let started = Instant::now();
    let mut kept = Vec::new();
    for i in 0..records {
        let patient = resident(&mut rng);
        if i % (records / 10_000).max(1) == 0 {
            kept.push(patient.clone());
        }
        index.insert(&i.to_string(), MatchRecord::from_patient(&patient));
    }
    let insert_secs = started.elapsed().as_secs_f64();
    let after = rss_mib();

    // Queries: the same residents as registered elsewhere (the name written in pinyin, the
    // phone missing), and strangers.
    let mut queries: Vec<Value> = kept
        .iter()
        .map(|p| {
            let mut q = p.clone();
            let family = p["name"][0]["family"].as_str().unwrap_or_default();
            let given = p["name"][0]["given"][0].as_str().unwrap_or_default();
            q["name"] = json!([{"text": format!("{family}{given}")}]);
            q.as_object_mut().map(|o| o.remove("telecom"));
            q
        })
        .collect();
    let known = queries.len();
    for _ in 0..known {
        queries.push(resident(&mut rng));
    }
    let started = Instant::now();
    let mut candidates = 0usize;
    let mut found = 0usize;
    for (i, query) in queries.iter().enumerate() {
        let result = index.candidates(&MatchRecord::from_patient(query));
        candidates += result.len();
        if i < known && result.first().is_some_and(|c| c.probability >= 0.5) {
            found += 1;
        }
    }
    let query_secs = started.elapsed().as_secs_f64();
    println!("patient index at scale: {records} synthetic residents");
    println!(
        "  insert: {:.1} s, {:.0} records/s; resident memory +{:.0} MiB ({:.0} bytes/record)",
        insert_secs,
        records as f64 / insert_secs,
        after - before,
        (after - before) * 1024.0 * 1024.0 / records.max(1) as f64
    );
    println!(
        "  queries: {} in {:.2} s = {:.0}/s ({:.3} ms each), {:.1} candidates returned per query",
        queries.len(),
        query_secs,
        queries.len() as f64 / query_secs,
        query_secs * 1000.0 / queries.len() as f64,
        candidates as f64 / queries.len() as f64
    );
    println!("  known residents found (p >= 0.5): {found} of {known}");
    Ok(())
}

//! Text folding shared by the comparators: one canonical form for names and addresses.

use std::collections::HashSet;
use std::sync::OnceLock;

use pinyin::ToPinyin as _;
use unicode_normalization::UnicodeNormalization as _;

/// Whether `c` is a CJK unified ideograph (the characters of Chinese names).
pub fn is_han(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2EBEF)
}

/// Folds text for comparison: NFKC (full-width letters and digits become ASCII), traditional
/// Chinese characters become simplified, Latin letters lose case and diacritics (`ü` → `u`),
/// and everything that is neither a letter, a digit nor a Chinese character becomes a single
/// space separating tokens. Leading/trailing spaces are removed.
pub fn fold(input: &str) -> String {
    let nfkc: String = input.nfkc().collect();
    let simplified = if nfkc.chars().any(is_han) {
        fast2s::convert(&nfkc)
    } else {
        nfkc
    };
    let mut out = String::with_capacity(simplified.len());
    let mut pending_space = false;
    for c in simplified.chars() {
        if is_han(c) {
            push(&mut out, &mut pending_space, c);
        } else if c.is_ascii_alphanumeric() {
            push(&mut out, &mut pending_space, c.to_ascii_lowercase());
        } else if c.is_alphanumeric() {
            // Strip diacritics: keep the base letters of the canonical decomposition.
            for base in c.to_lowercase().flat_map(|l| l.nfkd()) {
                if base.is_alphanumeric() {
                    push(&mut out, &mut pending_space, base);
                }
            }
        } else {
            pending_space = !out.is_empty();
        }
    }
    out
}

fn push(out: &mut String, pending_space: &mut bool, c: char) {
    if *pending_space {
        out.push(' ');
        *pending_space = false;
    }
    out.push(c);
}

/// Toneless pinyin of the Chinese characters of `han`, syllables concatenated (`张伟` →
/// `zhangwei`); other characters are kept as they are. `surname` selects the surname reading
/// of characters read differently in surnames (`单` shan, `曾` zeng, `区` ou, …).
pub fn pinyin(han: &str, surname: bool) -> String {
    let mut out = String::with_capacity(han.len() * 2);
    for c in han.chars() {
        if surname {
            if let Some(reading) = surname_reading(c) {
                out.push_str(reading);
                continue;
            }
        }
        match c.to_pinyin() {
            Some(p) => out.extend(p.plain().chars().map(|l| if l == 'ü' { 'u' } else { l })),
            None => out.push(c),
        }
    }
    out
}

/// Surname readings that differ from the character's most common reading.
fn surname_reading(c: char) -> Option<&'static str> {
    Some(match c {
        '单' => "shan",
        '曾' => "zeng",
        '仇' => "qiu",
        '朴' => "piao",
        '解' => "xie",
        '查' => "zha",
        '区' => "ou",
        '盖' => "ge",
        '乐' => "yue",
        '缪' => "miao",
        '翟' => "zhai",
        '员' => "yun",
        '召' => "shao",
        '种' => "chong",
        '秘' => "bi",
        '冼' => "xian",
        '覃' => "qin",
        '尉' => "yu",
        '长' => "zhang",
        '万' => "wan",
        '俟' => "qi",
        '藏' => "zang",
        '华' => "hua",
        '宿' => "su",
        '燕' => "yan",
        _ => return None,
    })
}

/// Two-character surnames (复姓), so that `欧阳娜娜` splits as `欧阳` + `娜娜`.
pub const COMPOUND_SURNAMES: &[&str] = &[
    "欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "令狐", "慕容", "尉迟", "长孙", "宇文", "司徒",
    "夏侯", "公孙", "轩辕", "端木", "独孤", "南宫", "西门", "呼延", "万俟", "澹台", "公冶", "申屠",
    "太史", "闻人", "赫连", "钟离", "完颜", "拓跋",
];

/// The most common Chinese surnames; their pinyin tells a family-name-first romanisation
/// ("Zhang Wei") from a given-name-first one ("Wei Zhang" is still ambiguous: 魏 is a surname).
const COMMON_SURNAMES: &str = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤";

/// Whether `latin` (folded, one token) is the pinyin of a common Chinese surname.
pub fn is_common_surname_pinyin(latin: &str) -> bool {
    static SET: OnceLock<HashSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        let mut set: HashSet<String> = COMMON_SURNAMES
            .chars()
            .map(|c| pinyin(&c.to_string(), true))
            .collect();
        set.extend(COMPOUND_SURNAMES.iter().map(|s| pinyin(s, true)));
        set
    })
    .contains(latin)
}

/// American Soundex code of the ASCII letters of `s` (`""` when it has none): a coarse
/// phonetic key used only for blocking.
pub fn soundex(s: &str) -> String {
    fn code(c: u8) -> u8 {
        match c {
            b'b' | b'f' | b'p' | b'v' => b'1',
            b'c' | b'g' | b'j' | b'k' | b'q' | b's' | b'x' | b'z' => b'2',
            b'd' | b't' => b'3',
            b'l' => b'4',
            b'm' | b'n' => b'5',
            b'r' => b'6',
            b'h' | b'w' => b'h',
            _ => b'0',
        }
    }
    let mut letters = s
        .bytes()
        .filter(u8::is_ascii_alphabetic)
        .map(|c| c.to_ascii_lowercase());
    let Some(first) = letters.next() else {
        return String::new();
    };
    let mut out = vec![first.to_ascii_uppercase()];
    let mut last = code(first);
    for c in letters {
        let k = code(c);
        if k == b'h' {
            continue;
        }
        if k != b'0' && k != last {
            out.push(k);
            if out.len() == 4 {
                break;
            }
        }
        last = k;
    }
    out.resize(4, b'0');
    String::from_utf8(out).unwrap_or_default()
}

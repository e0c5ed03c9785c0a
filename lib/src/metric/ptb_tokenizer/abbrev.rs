//! PTBLexer's abbreviation lists (the words whose period stays with them: ABBREV1 before a
//! lower-case word or the end, ABBREV2/ABBREV4 titles, ABBREV3 before a number) and acronym
//! followers, and their matchers, for the tokenizer in the parent module.

use super::{lit, m_acro};

const ABBREV1: &[&str] = &[
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "mon", "tue",
    "tues", "wed", "thu", "thurs", "fri", "ala", "ariz", "calif", "colo", "conn", "ct", "dak", "fla", "ga",
    "ind", "kan", "kans", "ky", "md", "mich", "minn", "mo", "mont", "neb", "nev", "okla", "penn", "tenn",
    "va", "vt", "wis", "wisc", "wyo", "inc", "co", "cos", "corp", "pty", "pte", "ptys", "ptes", "ppty",
    "ltd", "plc", "rt", "bancorp", "bhd", "assn", "univ", "intl", "sys", "tel", "est", "ext", "sq", "jr",
    "bros", "ed.d", "ph.d", "esq", "etc", "al", "seq", "bldg",
];
/// ABSTATE's entries whose first letter must be upper case ([A]z, [D]el, ...).
const ABBREV1_CAPITAL: &[&str] =
    &["az", "ark", "del", "ill", "la", "mass", "miss", "ore", "pa", "tex", "wash"];
const ABBREV4: &[&str] = &[
    "mr", "mrs", "ms", "drs", "dr", "profs", "prof", "sens", "sen", "reps", "rep", "attys", "atty", "lt",
    "col", "gen", "messrs", "govs", "gov", "adm", "rev", "maj", "sgt", "cpl", "pvt", "capt", "st", "ste",
    "ave", "pres", "lieut", "rt", "hon", "brig", "cmdr", "comdr", "pfc", "spc", "supts", "supt", "det", "mt",
    "ft", "adj", "adv", "asst", "assoc", "ens", "insp", "mlle", "mme", "msgr", "sfc", "sr", "vs", "alex",
    "wm", "jos", "cie", "a.k.a", "cf", "treas", "ph", "invt", "elec", "natl", "mfg", "mtg", "dept", "blvd",
    "rd",
];
pub(super) const ABBREV3: &[&str] = &[
    "ca", "fig", "figs", "prop", "no", "nos", "sec", "secs", "sect", "sects", "art", "arts", "para", "paras",
    "bldg", "pp", "op", "rs",
];
/// Words after which an acronym's period also ends the sentence (first letter upper case).
pub(super) const ACRONYM_FOLLOWERS: &[&str] = &[
    "about",
    "according",
    "additionally",
    "after",
    "an",
    "a",
    "as",
    "at",
    "but",
    "did",
    "during",
    "earlier",
    "he",
    "her",
    "here",
    "how",
    "however",
    "if",
    "in",
    "it",
    "last",
    "many",
    "more",
    "mr.",
    "ms.",
    "now",
    "once",
    "one",
    "other",
    "our",
    "she",
    "since",
    "so",
    "some",
    "such",
    "that",
    "the",
    "their",
    "then",
    "there",
    "these",
    "they",
    "this",
    "we",
    "when",
    "while",
    "what",
    "who",
    "why",
    "yet",
    "you",
];

/// Length of an abbreviation from `list` (with its period) at `s[i..]`, the longest.
pub(super) fn m_abbrev(s: &[char], i: usize, list: &[&str]) -> usize {
    list.iter()
        .filter_map(|w| {
            let n = lit(s, i, w)?;
            (i + n < s.len() && s[i + n] == '.').then_some(n + 1)
        })
        .max()
        .unwrap_or(0)
}

pub(super) fn m_abbrev1(s: &[char], i: usize) -> usize {
    let capital = ABBREV1_CAPITAL
        .iter()
        .filter_map(|w| {
            let n = lit(s, i, w)?;
            (s[i].is_uppercase() && i + n < s.len() && s[i + n] == '.').then_some(n + 1)
        })
        .max()
        .unwrap_or(0);
    m_abbrev(s, i, ABBREV1).max(capital)
}

/// ABBREV2 = ABBREV4 \. with ABBREV4 the titles and others above, `[M]iss`, `[v]`, and ACRO.
pub(super) fn m_abbrev2(s: &[char], i: usize) -> usize {
    let acro = m_acro(s, i);
    let acro = if acro > 0 && i + acro < s.len() && s[i + acro] == '.' { acro + 1 } else { 0 };
    let miss = if s[i] == 'M' { m_abbrev(s, i, &["miss"]) } else { 0 };
    m_abbrev(s, i, ABBREV4).max(acro).max(miss)
}

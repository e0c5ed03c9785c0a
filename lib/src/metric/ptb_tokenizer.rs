//! pycocoevalcap's `tokenizer/ptbtokenizer.py`, restated: it writes the captions one per line
//! (newlines inside a caption become spaces), runs Stanford CoreNLP 3.4.1's `PTBTokenizer
//! -preserveLines -lowerCase` over the file, and drops the tokens in its `PUNCTUATIONS` list.
//!
//! The tokenizer is a JFlex scanner (`PTBLexer.flex`): at each position the longest match of
//! its rules wins, the earlier rule on equal length, and a rule's trailing context (`A/B`)
//! counts toward the length but is not consumed. This module restates the rules that English
//! captions meet — words, contractions (`n't`, `'s`, `'re`, ...), the assimilations it splits
//! (`cannot`, `gonna`, `wanna`, `gotta`, `lemme`, `gimme`, `'tis`, `'twas`), apostrophe words
//! (`o'clock`, `'90s`, `'em`, `y'`), hyphenated words, numbers, fractions, acronyms and its
//! abbreviation lists (which keep their period), quotes, brackets (`-lrb-` etc.: lower-cased,
//! they are no longer in the punctuation list and stay), dashes, ellipses, symbols, `#tags`,
//! `@names` and URLs — and is checked against the jar on a corpus of tricky captions
//! (bins/tests/veval_captions.rs). Not restated: SGML with attributes, e-mail addresses,
//! phone numbers, smileys, emoji, CP1252 control characters and currency normalisation.

mod abbrev;
use abbrev::{m_abbrev, m_abbrev1, m_abbrev2, ABBREV3, ACRONYM_FOLLOWERS};

/// `ptbtokenizer.py`'s `PUNCTUATIONS`: tokens removed after tokenization (compared after
/// lower-casing, so `-LRB-` and friends, written `-lrb-`, are kept as the reference keeps them).
pub const PUNCTUATIONS: [&str; 17] = [
    "''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";",
];

/// The captions as pycocoevalcap's tokenizer returns them: each lower-cased, tokenized, its
/// punctuation tokens removed, the rest joined by single spaces. The captions are one text
/// (the reference tokenizes the file of all of them), so a caption's last token can depend on
/// how the next one begins, as in the reference.
pub fn ptb_tokenize(captions: &[&str]) -> Vec<String> {
    let text: Vec<char> =
        captions.iter().map(|c| c.replace('\n', " ")).collect::<Vec<_>>().join("\n").chars().collect();
    let mut lines = vec![Vec::new()];
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        if c == '\n' {
            lines.push(Vec::new());
            i += 1;
            continue;
        }
        if is_space(c) || is_newline(c) {
            i += 1;
            continue;
        }
        let (consumed, tok) = next_token(&text, i);
        i += consumed;
        if let Some(tok) = tok {
            lines.last_mut().expect("one line at least").push(tok.to_lowercase());
        }
    }
    lines.truncate(captions.len());
    lines
        .into_iter()
        .map(|toks| {
            toks.into_iter().filter(|t| !PUNCTUATIONS.contains(&t.as_str())).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\u{a0}' | '\u{2000}'..='\u{200a}' | '\u{3000}')
}

fn is_newline(c: char) -> bool {
    matches!(c, '\r' | '\n' | '\u{2028}' | '\u{2029}' | '\u{b}' | '\u{c}' | '\u{85}')
}

fn is_spacenl(c: char) -> bool {
    is_space(c) || is_newline(c)
}

fn is_letter(c: char) -> bool {
    c.is_alphabetic() && !c.is_numeric()
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit()
}

fn is_alnum(c: char) -> bool {
    is_letter(c) || is_digit(c)
}

fn is_apos(c: char) -> bool {
    matches!(c, '\'' | '\u{92}' | '\u{2019}' | '\u{b4}')
}

fn is_apos_etc(c: char) -> bool {
    is_apos(c) || matches!(c, '`' | '\u{91}' | '\u{2018}' | '\u{201b}')
}

/// Case-insensitive match of an ASCII literal at `s[i..]`: its length, or None.
fn lit(s: &[char], i: usize, word: &str) -> Option<usize> {
    let n = word.chars().count();
    if i + n > s.len() {
        return None;
    }
    s[i..i + n].iter().zip(word.chars()).all(|(a, b)| a.to_lowercase().eq(b.to_lowercase())).then_some(n)
}

/// The longest of several literal alternatives at `s[i..]`.
fn lits(s: &[char], i: usize, words: &[&str]) -> Option<usize> {
    words.iter().filter_map(|w| lit(s, i, w)).max()
}

fn count_while(s: &[char], i: usize, f: impl Fn(char) -> bool) -> usize {
    s[i.min(s.len())..].iter().take_while(|&&c| f(c)).count()
}

/// WORD = LETTER (LETTER|DIGIT)* ([.!?] LETTER (LETTER|DIGIT)*)*
fn m_word(s: &[char], i: usize) -> usize {
    if i >= s.len() || !is_letter(s[i]) {
        return 0;
    }
    let mut j = i + 1 + count_while(s, i + 1, is_alnum);
    while j + 1 < s.len() && matches!(s[j], '.' | '!' | '?') && is_letter(s[j + 1]) {
        j += 2 + count_while(s, j + 2, is_alnum);
    }
    j - i
}

/// NUM = DIGIT* ([.,] DIGIT+)+ | DIGIT+ ([.:,] DIGIT+)*
fn m_num(s: &[char], i: usize) -> usize {
    let lead = count_while(s, i, is_digit);
    let mut j = i + lead;
    let mut groups = 0;
    while j + 1 < s.len() && matches!(s[j], '.' | ',' | ':') && is_digit(s[j + 1]) {
        if s[j] == ':' && lead == 0 {
            break;
        }
        j += 1 + count_while(s, j + 1, is_digit);
        groups += 1;
    }
    if lead == 0 && groups == 0 {
        0
    } else {
        j - i
    }
}

/// NUMBER = [-+]? NUM
fn m_number(s: &[char], i: usize) -> usize {
    let sign = usize::from(i < s.len() && matches!(s[i], '-' | '+'));
    let n = m_num(s, i + sign);
    if n == 0 {
        0
    } else {
        sign + n
    }
}

/// ACRO = [A-Za-z] (\. [A-Za-z])*
fn m_acro(s: &[char], i: usize) -> usize {
    if i >= s.len() || !s[i].is_ascii_alphabetic() {
        return 0;
    }
    let mut j = i + 1;
    while j + 1 < s.len() && s[j] == '.' && s[j + 1].is_ascii_alphabetic() {
        j += 2;
    }
    j - i
}

/// THING: ([dDoOlL] APOS alnum)? (alnum+ | NUMBER) (HYPHEN ([dDoOlL] APOS alnum)? (alnum+ | NUM))*
fn m_thing(s: &[char], i: usize) -> usize {
    let part = |j: usize, first: bool| -> usize {
        let mut k = j;
        if k + 2 < s.len()
            && matches!(s[k], 'd' | 'D' | 'o' | 'O' | 'l' | 'L')
            && is_apos_etc(s[k + 1])
            && is_alnum(s[k + 2])
        {
            k += 3;
        }
        let a = count_while(s, k, is_alnum);
        let n = if first { m_number(s, k) } else { m_num(s, k) };
        let body = a.max(n);
        if body == 0 && k == j {
            0
        } else {
            k - j + body
        }
    };
    let first = part(i, true);
    if first == 0 {
        return 0;
    }
    let mut j = i + first;
    while j < s.len() && matches!(s[j], '-' | '_' | '\u{58a}' | '\u{2010}' | '\u{2011}') {
        let p = part(j + 1, false);
        if p == 0 {
            break;
        }
        j += 1 + p;
    }
    j - i
}

/// HTHING = [alnum][alnum.,\u00AD]* (- ([alnum\u00AD]+ (\.DIGIT+)? | ACRO2\.))+
fn m_hthing(s: &[char], i: usize) -> usize {
    if i >= s.len() || !is_alnum(s[i]) {
        return 0;
    }
    // The head may swallow dots and commas; back off to the longest head that a hyphen part
    // follows (JFlex finds the longest overall match).
    let head_max = 1 + count_while(s, i + 1, |c| is_alnum(c) || matches!(c, '.' | ',' | '\u{ad}'));
    let mut best = 0;
    for head in (1..=head_max).rev() {
        let mut j = i + head;
        let mut parts = 0;
        while j < s.len() && s[j] == '-' {
            let a = count_while(s, j + 1, |c| is_alnum(c) || c == '\u{ad}');
            let acro = m_acro(s, j + 1);
            let acro2 =
                if acro >= 3 && j + 1 + acro < s.len() && s[j + 1 + acro] == '.' { acro + 1 } else { 0 };
            let mut p = a;
            if a > 0 && j + 1 + a + 1 < s.len() && s[j + 1 + a] == '.' && is_digit(s[j + 2 + a]) {
                p = a + 1 + count_while(s, j + 2 + a, is_digit);
            }
            let p = p.max(acro2);
            if p == 0 {
                break;
            }
            j += 1 + p;
            parts += 1;
        }
        if parts > 0 {
            best = best.max(j - i);
        }
    }
    best
}

/// THING3 = alnum+ (-alpha+){0,2} (\\?/ alnum+ (-alpha+){0,2}){1,2}
fn m_thing3(s: &[char], i: usize) -> usize {
    let seg = |j: usize| -> usize {
        let a = count_while(s, j, is_alnum);
        if a == 0 {
            return 0;
        }
        let mut k = j + a;
        for _ in 0..2 {
            if k < s.len() && s[k] == '-' {
                let b = count_while(s, k + 1, is_letter);
                if b == 0 {
                    break;
                }
                k += 1 + b;
            }
        }
        k - j
    };
    let first = seg(i);
    if first == 0 {
        return 0;
    }
    let mut j = i + first;
    let mut slashes = 0;
    while slashes < 2 {
        let bs = usize::from(j < s.len() && s[j] == '\\');
        if j + bs < s.len() && s[j + bs] == '/' {
            let n = seg(j + bs + 1);
            if n == 0 {
                break;
            }
            j += bs + 1 + n;
            slashes += 1;
        } else {
            break;
        }
    }
    if slashes == 0 {
        0
    } else {
        j - i
    }
}

/// FRAC = (DIGIT{1,4} [- \u00A0])? DIGIT{1,4} (\\?/ | \u2044) DIGIT{1,4}
fn m_frac(s: &[char], i: usize) -> usize {
    let simple = |j: usize| -> usize {
        let a = count_while(s, j, is_digit).min(4);
        if a == 0 || count_while(s, j, is_digit) > 4 {
            return 0;
        }
        let mut k = j + a;
        if k < s.len() && s[k] == '\\' {
            k += 1;
        }
        if k < s.len() && matches!(s[k], '/' | '\u{2044}') {
            let b = count_while(s, k + 1, is_digit).min(4);
            if b > 0 {
                return k + 1 + b - j;
            }
        }
        0
    };
    let a = count_while(s, i, is_digit);
    let mut best = simple(i);
    if (1..=4).contains(&a) && i + a < s.len() && matches!(s[i + a], '-' | ' ' | '\u{a0}') {
        let b = simple(i + a + 1);
        if b > 0 {
            best = best.max(a + 1 + b);
        }
    }
    best
}

/// The token at `s[i..]` (not a space): characters consumed and the token (None: deleted).
fn next_token(s: &[char], i: usize) -> (usize, Option<String>) {
    let text = |n: usize| -> String { s[i..i + n].iter().collect() };
    // (match length including trailing context, token length, replacement) per rule, in the
    // lexer's rule order; the longest match wins, the first on a tie.
    let mut best: (usize, usize, Option<String>) = (0, 0, None);
    let mut offer = |matched: usize, token: usize, repl: Option<String>| {
        if matched > best.0 {
            best = (matched, token, repl);
        }
    };
    let at = |j: usize| s.get(j).copied();
    let not_alpha_at = |j: usize| at(j).is_none_or(|c| !c.is_alphabetic());

    // ASSIMILATIONS3, ASSIMILATIONS2: the word, less its last 3 or 2 letters, then the rest.
    if let Some(n) = lits(s, i, &["cannot", "'twas"]) {
        offer(n, n - 3, None);
    }
    if let Some(n) = lits(s, i, &["'tis", "gonna", "gotta", "lemme", "gimme", "wanna"]) {
        offer(n, n - 2, None);
    }
    // SGML: a bare <tag> or </tag>.
    if s[i] == '<' {
        let slash = usize::from(at(i + 1) == Some('/'));
        if at(i + 1 + slash).is_some_and(|c| c.is_ascii_alphabetic()) {
            let n = 1
                + slash
                + count_while(s, i + 1 + slash, |c| c.is_ascii_alphanumeric() || "_:.-".contains(c));
            if at(i + n) == Some('>') {
                offer(n + 1, n + 1, None);
            }
        }
    }
    // SPMDASH
    if matches!(s[i], '\u{96}' | '\u{97}' | '\u{2013}' | '\u{2014}' | '\u{2015}') {
        offer(1, 1, Some("--".into()));
    }
    if let Some(n) = lits(s, i, &["&mdash;", "&ndash;", "&md;"]) {
        offer(n, n, Some("--".into()));
    }
    if let Some(n) = lit(s, i, "&amp;") {
        offer(n, n, Some("&".into()));
    }
    let word = m_word(s, i);
    if word > 0 {
        // WORD/REDAUX
        let j = i + word;
        if at(j).is_some_and(is_apos) {
            let r = lits(s, j + 1, &["m", "s", "d", "re", "ve", "ll"]).unwrap_or(0);
            if r > 0 {
                offer(word + 1 + r, word, None);
            }
        }
    }
    // SWORD/SREDAUX: letters whose last ASCII letter is not n, then n't (do|n't, ca|n't).
    let sword = count_while(s, i, |c| c.is_alphabetic() || c == '\u{ad}');
    for len in (1..=sword).rev() {
        let j = i + len;
        if s[j - 1].is_ascii_alphabetic()
            && !matches!(s[j - 1], 'n' | 'N')
            && matches!(at(j), Some('n' | 'N'))
            && at(j + 1).is_some_and(is_apos_etc)
            && matches!(at(j + 2), Some('t' | 'T'))
        {
            offer(len + 3, len, None);
            break;
        }
    }
    if word > 0 {
        offer(word, word, None);
    }
    // APOWORD (the forms captions meet) and APOWORD2/letter.
    if is_apos(s[i]) {
        if matches!(at(i + 1), Some('n' | 'N')) {
            let n = if at(i + 2).is_some_and(is_apos) { 3 } else { 2 };
            offer(n, n, None);
        }
        if let Some(n) = lits(s, i + 1, &["em", "til", "till", "cause"]) {
            offer(n + 1, n + 1, None);
        }
        if at(i + 1).is_some_and(|c| ('2'..='9').contains(&c))
            && at(i + 2) == Some('0')
            && matches!(at(i + 3), Some('s' | 'S'))
        {
            offer(4, 4, None);
        }
    }
    if matches!(s[i], 'l' | 'L' | 'd' | 'D' | 'j' | 'J') && at(i + 1).is_some_and(is_apos) {
        offer(2, 2, None);
    }
    for w in ["somethin", "ol", "dunkin"] {
        if let Some(n) = lit(s, i, w) {
            if at(i + n).is_some_and(is_apos) {
                offer(n + 1, n + 1, None);
            }
        }
    }
    for w in ["c'mon", "e'er", "s'mores", "ev'ry", "li'l", "nat'l", "nor'easter", "cont'd"] {
        if let Some(n) = lit(s, i, w) {
            offer(n, n, None);
        }
    }
    // [A-HJ-XZn] APOSETCETERA letter{2,}: O'Neil, but also o'clock in 3.4.1.
    if (s[i].is_ascii_alphabetic() && !matches!(s[i], 'I' | 'Y' | 'i' | 'y'))
        && at(i + 1).is_some_and(is_apos_etc)
    {
        let n = count_while(s, i + 2, |c| c.is_alphabetic());
        if n >= 2 {
            offer(2 + n, 2 + n, None);
        }
    }
    // letter letter* [aeiouy] APOS [aeiouA-Z] letter*: ma'am (y'all is y' + all)
    {
        let n = count_while(s, i, |c| c.is_alphabetic());
        for len in (2..=n).rev() {
            let j = i + len;
            if "aeiouyAEIOUY".contains(s[j - 1])
                && at(j).is_some_and(is_apos_etc)
                && at(j + 1).is_some_and(|c| "aeiou".contains(c) || c.is_ascii_uppercase())
            {
                let m = count_while(s, j + 2, |c| c.is_alphabetic());
                offer(len + 2 + m, len + 2 + m, None);
                break;
            }
        }
    }
    if matches!(s[i], 'y' | 'Y')
        && at(i + 1).is_some_and(is_apos)
        && at(i + 2).is_some_and(|c| c.is_alphabetic())
    {
        offer(3, 2, None);
    }
    // FULLURL
    if let Some(n) = lits(s, i, &["http://", "https://", "ftp://"]) {
        let body = count_while(s, i + n, |c| !c.is_whitespace() && !"\"<>|(){}[]".contains(c));
        let mut len = n + body;
        while len > n && "'.!?,;:&-".contains(s[i + len - 1]) {
            len -= 1;
        }
        if len > n {
            offer(len, len, None);
        }
    }
    // EMAIL = [a-zA-Z0-9._%+-]+ @ [A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9]
    {
        let local = count_while(s, i, |c| c.is_ascii_alphanumeric() || "._%+-".contains(c));
        if local > 0 && at(i + local) == Some('@') {
            let d = i + local + 1;
            let mut n = count_while(s, d, |c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
            while n > 0 && !s[d + n - 1].is_ascii_alphanumeric() {
                n -= 1;
            }
            if n >= 2 && s[d].is_ascii_alphanumeric() {
                offer(local + 1 + n, local + 1 + n, None);
            }
        }
    }
    // TWITTER
    if s[i] == '@' && at(i + 1).is_some_and(|c| c.is_ascii_alphabetic() || c == '_') {
        let n = 1 + count_while(s, i + 1, |c| c.is_ascii_alphanumeric() || c == '_');
        offer(n, n, None);
    }
    if s[i] == '#' && at(i + 1).is_some_and(is_letter) {
        let mut n = 1 + count_while(s, i + 1, |c| is_alnum(c) || c == '_');
        while s[i + n - 1] == '_' {
            n -= 1;
        }
        offer(n, n, None);
    }
    // REDAUX/[^alpha], SREDAUX/[^alpha]
    if is_apos(s[i]) {
        if let Some(r) = lits(s, i + 1, &["m", "s", "d", "re", "ve", "ll"]) {
            if not_alpha_at(i + 1 + r) {
                offer(r + 1 + usize::from(at(i + 1 + r).is_some()), r + 1, None);
            }
        }
    }
    if matches!(s[i], 'n' | 'N')
        && at(i + 1).is_some_and(is_apos_etc)
        && matches!(at(i + 2), Some('t' | 'T'))
        && not_alpha_at(i + 3)
    {
        offer(3 + usize::from(at(i + 3).is_some()), 3, None);
    }
    // DATE
    {
        let a = count_while(s, i, is_digit);
        if (1..=2).contains(&a) && matches!(at(i + a), Some('-' | '/')) {
            let b = count_while(s, i + a + 1, is_digit);
            let k = i + a + 1 + b;
            if (1..=2).contains(&b) && matches!(at(k), Some('-' | '/')) {
                let c = count_while(s, k + 1, is_digit);
                if c >= 2 {
                    offer(a + b + 2 + c.min(4), a + b + 2 + c.min(4), None);
                }
            }
        }
    }
    let number = m_number(s, i);
    if number > 0 {
        offer(number, number, None);
    }
    let frac = m_frac(s, i);
    if frac > 0 {
        offer(frac, frac, Some(text(frac).replace(' ', "\u{a0}")));
    }
    let frac2 = match s[i] {
        '\u{bc}' => Some("1/4"),
        '\u{bd}' => Some("1/2"),
        '\u{be}' => Some("3/4"),
        '\u{2153}' => Some("1/3"),
        '\u{2154}' => Some("2/3"),
        _ => None,
    };
    if let Some(f) = frac2 {
        offer(1, 1, Some(f.into()));
    }
    // TBSPEC: -LRB- and friends written out.
    if let Some(n) = lits(s, i, &["-rrb-", "-lrb-", "-rcb-", "-lcb-", "-rsb-", "-lsb-"]) {
        offer(n, n, None);
    }
    let thing3 = m_thing3(s, i);
    if thing3 > 0 {
        offer(thing3, thing3, None);
    }
    // DOLSIGN = [A-Z]*\$ | #
    {
        let caps = count_while(s, i, |c| c.is_ascii_alphabetic());
        if at(i + caps) == Some('$') {
            offer(caps + 1, caps + 1, None);
        }
        if s[i] == '#' {
            offer(1, 1, None);
        }
    }
    // ACRONYM/(spaces)(The|He|...)(space|[?!]): the acronym, then its period again.
    {
        let acro = m_acro(s, i);
        if acro > 0 && at(i + acro) == Some('.') {
            let sp = count_while(s, i + acro + 1, is_spacenl);
            let k = i + acro + 1 + sp;
            if sp > 0 && at(k).is_some_and(|c| c.is_uppercase()) {
                for w in ACRONYM_FOLLOWERS {
                    if let Some(n) = lit(s, k, w) {
                        if at(k + n).is_some_and(|c| is_spacenl(c) || c == '?' || c == '!') {
                            // processAcronym: "I." gives "I" (the period next); longer ones keep it.
                            let token = if acro == 1 { 1 } else { acro + 1 };
                            offer(acro + 1 + sp + n + 1, token, None);
                        }
                    }
                }
            }
        }
    }
    // ABBREV3/{SPACENL}?digit
    {
        let a3 = m_abbrev(s, i, ABBREV3).max(if s[i] == 'P' { m_abbrev(s, i, &["pt"]) } else { 0 });
        if a3 > 0 {
            let sp = usize::from(at(i + a3).is_some_and(is_spacenl));
            if at(i + a3 + sp).is_some_and(is_digit) {
                offer(a3 + sp + 1, a3, None);
            }
        }
    }
    // ABBREV1 (with its trailing context, or at the end), ABBREV2, ABBREV4/SPACE, ACRO/SPACENL.
    let a1 = m_abbrev1(s, i);
    if a1 > 0 {
        let rest = s.len() - (i + a1);
        offer(a1 + rest.min(2), a1, None);
    }
    let a2 = m_abbrev2(s, i);
    if a2 > 0 {
        offer(a2, a2, None);
    }
    // TBSPEC2 = APOS [0-9][0-9] / SPACENL
    if is_apos(s[i])
        && at(i + 1).is_some_and(is_digit)
        && at(i + 2).is_some_and(is_digit)
        && at(i + 3).is_some_and(is_spacenl)
    {
        offer(4, 3, None);
    }
    // WORD\./INSENTP
    if word > 0 && at(i + word) == Some('.') && at(i + word + 1).is_some_and(|c| ",;:\u{3001}".contains(c)) {
        offer(word + 2, word + 1, None);
    }
    // DBLQUOT: ``, before a letter, digit or $; '' otherwise.
    {
        let n = if s[i] == '"' {
            1
        } else if let Some(n) = lit(s, i, "&quot;") {
            n
        } else if "`'\u{91}\u{92}\u{2018}\u{2019}".contains(s[i]) && at(i + 1) == Some('\'') {
            2
        } else {
            0
        };
        if n > 0 {
            let left = at(i + n).is_some_and(|c| is_alnum(c) || c == '$');
            offer(n + usize::from(left), n, Some(if left { "``" } else { "''" }.into()));
        }
    }
    if s[i] == '<' || s[i] == '>' {
        offer(1, 1, None);
    }
    for (c, t) in
        [('{', "-LCB-"), ('}', "-RCB-"), ('[', "-LSB-"), (']', "-RSB-"), ('(', "-LRB-"), (')', "-RRB-")]
    {
        if s[i] == c {
            offer(1, 1, Some(t.into()));
        }
    }
    if s[i] == '-' {
        let n = count_while(s, i, |c| c == '-');
        offer(n, n, Some(if (3..=4).contains(&n) { "--".into() } else { text(n) }));
    }
    if s[i] == '.' || s[i] == '\u{2026}' || s[i] == '\u{85}' {
        let n = count_while(s, i, |c| c == '.');
        if n >= 3 || s[i] != '.' {
            let n = n.max(1);
            // LDOTS/\.{SPACENLS}letter: a fourth dot before a new word is a period.
            let four = n >= 4
                && at(i + n).is_some_and(is_spacenl)
                && at(i + n + count_while(s, i + n, is_spacenl)).is_some_and(|c| c.is_alphabetic());
            if four {
                offer(n, n - 1, Some("...".into()));
            } else {
                offer(n, n, Some("...".into()));
            }
        }
    }
    for ch in ['@', '#', '_', '*', '='] {
        if s[i] == ch {
            let n = count_while(s, i, |c| c == ch);
            offer(n, n, None);
        }
    }
    if ",;:\u{3001}".contains(s[i]) {
        offer(1, 1, None);
    }
    if s[i] == '?' || s[i] == '!' {
        let n = count_while(s, i, |c| c == '?' || c == '!');
        offer(n, n, None);
    }
    if ".\u{a1}\u{bf}/".contains(s[i]) {
        offer(1, 1, None);
    }
    let hthing = m_hthing(s, i);
    if hthing > 0 {
        offer(hthing, hthing, None);
    }
    let thing = m_thing(s, i);
    if thing > 0 {
        let t = text(thing);
        offer(thing, thing, Some(latex_quotes(&t, false)));
    }
    // THINGA = [A-Z]+ (& [A-Z]+)+ (upper case only)
    {
        let mut j = i + count_while(s, i, |c| c.is_ascii_uppercase());
        let mut parts = 0;
        while j > i && matches!(at(j), Some('&' | '+')) && at(j + 1).is_some_and(|c| c.is_ascii_uppercase()) {
            j += 1 + count_while(s, j + 1, |c| c.is_ascii_uppercase());
            parts += 1;
        }
        if parts > 0 {
            offer(j - i, j - i, None);
        }
    }
    // QUOTES = APOS | [`\u2018-\u201F...]{1,2}
    {
        let q = |c: char| {
            c == '`'
                || ('\u{2018}'..='\u{201f}').contains(&c)
                || "\u{82}\u{84}\u{91}\u{92}\u{93}\u{94}\u{2039}\u{203a}\u{ab}\u{bb}".contains(c)
        };
        if is_apos(s[i]) {
            let t = text(1);
            let left = at(i + 1).is_some_and(|c| c.is_alphabetic());
            offer(1, 1, Some(latex_quotes(&t, left)));
        } else if q(s[i]) {
            let n = if at(i + 1).is_some_and(q) { 2 } else { 1 };
            let t = text(n);
            let left = at(i + n).is_some_and(|c| c.is_alphabetic());
            offer(n, n, Some(latex_quotes(&t, left)));
        }
    }
    // DOLSIGN2 with normalizeCurrency (LexerUtils): cents, pound as #, other currencies as $.
    match s[i] {
        '\u{a2}' => offer(1, 1, Some("cents".into())),
        '\u{a3}' => offer(1, 1, Some("#".into())),
        '\u{80}' | '\u{a4}' | '\u{20a0}' | '\u{20ac}' | '\u{20b9}' => offer(1, 1, Some("$".into())),
        _ => {}
    }
    // MISCSYMBOL and the other currency signs: one character each.
    if "+%&~^|\\\u{a5}\u{a7}\u{a9}\u{ac}\u{ae}\u{b0}\u{b1}\u{b5}\u{b6}\u{b7}\u{d7}\u{f7}\u{20ac}"
        .contains(s[i])
        || ('\u{2190}'..='\u{2bff}').contains(&s[i])
    {
        offer(1, 1, None);
    }
    let (matched, token, repl) = best;
    if matched == 0 {
        // Untokenizable: the reference deletes it (and logs the first one).
        return (1, None);
    }
    (token, Some(repl.unwrap_or_else(|| text(token))))
}

/// PTBLexer's `latexQuotes`: straight quotes by side, curly ones by shape.
fn latex_quotes(tok: &str, probably_left: bool) -> String {
    let mut out = tok.replace("&apos;", "'");
    out = out.replace("&quot;", "\"");
    out = if probably_left { out.replace('\'', "`").replace('"', "``") } else { out.replace('"', "''") };
    let mut r = String::new();
    for c in out.chars() {
        match c {
            '\u{82}' | '\u{8b}' | '\u{91}' | '\u{2018}' | '\u{201a}' | '\u{201b}' | '\u{2039}' => r.push('`'),
            '\u{92}' | '\u{9b}' | '\u{b4}' | '\u{2019}' | '\u{203a}' => r.push('\''),
            '\u{84}' | '\u{93}' | '\u{201c}' | '\u{201e}' | '\u{ab}' => r.push_str("``"),
            '\u{94}' | '\u{201d}' | '\u{bb}' => r.push_str("''"),
            c => r.push(c),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(s: &str) -> String {
        ptb_tokenize(&[s]).remove(0)
    }

    // Expected strings are the jar's output (stanford-corenlp-3.4.1.jar PTBTokenizer
    // -preserveLines -lowerCase) with PUNCTUATIONS removed, as ptbtokenizer.py returns it.
    #[test]
    fn words_contractions_and_punctuation() {
        assert_eq!(tok("A man doesn't play the guitar."), "a man does n't play the guitar");
        assert_eq!(
            tok("It's a dog's toy; they're \"happy\" (really)."),
            "it 's a dog 's toy they 're happy -lrb- really -rrb-"
        );
        assert_eq!(
            tok("I can't, won't, cannot; gonna wanna gotta lemme gimme"),
            "i ca n't wo n't can not gon na wan na got ta lem me gim me"
        );
        assert_eq!(
            tok("the man jumps!!! what?! wow!? ok... hmm.... so.. no.."),
            "the man jumps !!! what ?! wow !? ok hmm so no"
        );
    }

    #[test]
    fn abbreviations_keep_their_period() {
        assert_eq!(
            tok("Mr. Smith and St. Louis vs. Dr. Who at 5 p.m. etc."),
            "mr. smith and st. louis vs. dr. who at 5 p.m. etc."
        );
        assert_eq!(tok("a man holds the letter a."), "a man holds the letter a.");
        assert_eq!(tok("A man is in the U.S. He runs."), "a man is in the u.s. he runs");
    }

    #[test]
    fn numbers_hyphens_and_symbols() {
        assert_eq!(
            tok("A well-known man -- running -- fast... and U.S. flags at 3.5 mph, 1,000 people $5 50% cats & dogs."),
            "a well-known man running fast and u.s. flags at 3.5 mph 1,000 people $ 5 50 % cats & dogs"
        );
        assert_eq!(
            tok("a_b c__d e=mc2 a+b 1/2 50/50 and/or w/ a&b AT&T"),
            "a_b c __ d e = mc2 a + b 1/2 50/50 and/or w / a & b at&t"
        );
    }

    #[test]
    fn empty_captions_stay_empty_lines() {
        assert_eq!(ptb_tokenize(&["a man", "", "  ", "..."]), vec!["a man", "", "", ""]);
    }
}

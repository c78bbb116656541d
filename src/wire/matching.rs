//! Query matching that both ends share: words, `#tags`, a regex and an
//! author, over an entry's text (the server's `/past` filter, the client's
//! filter on what a follow receives), and the rules for what a tag and a
//! pattern may be. Pure: no I/O.

use crate::wire::entry;

/// The largest compiled regular expression a `/past regex` may build.
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a `/past regex` pattern within [`REGEX_SIZE_LIMIT`].
pub fn compile_regex(pattern: &str, ignore_case: bool) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(ignore_case)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => {
                format!("the regex is too big (over {limit} bytes compiled)")
            }
            // The error's own lines point at the fault; one line is sent.
            e => format!("bad regex: {}", e.to_string().replace('\n', " ")),
        })
}

/// Whether `word` may follow `#` as a tag: letters of any script, digits,
/// `_` and `-`.
pub fn is_tag_word(word: &str) -> bool {
    !word.is_empty() && word.chars().all(is_tag_char)
}

pub(crate) fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// What an entry's text and author must satisfy: the server's `/past`
/// filter, and the client's for what a follow receives.
#[derive(Debug, Clone, Default)]
pub struct TextMatch {
    /// Terms the text must all contain (lowercase when `ignore_case`).
    terms: Vec<Box<str>>,
    /// The terms' SIMD searchers, when the terms alone decide a match:
    /// then a stored line is matched on its bytes, without decoding it.
    byte_terms: Vec<memchr::memmem::Finder<'static>>,
    ignore_case: bool,
    /// Tags the text must all hold (lowercase).
    tags: Vec<Box<str>>,
    regex: Option<regex::Regex>,
    /// Written by this author.
    from: Option<Box<str>>,
}

impl TextMatch {
    /// `regex` compiled as [`compile_regex`] compiles it.
    pub fn new<'a>(
        terms: impl IntoIterator<Item = &'a str>,
        ignore_case: bool,
        tags: impl IntoIterator<Item = &'a str>,
        regex: Option<regex::Regex>,
        from: Option<&str>,
    ) -> TextMatch {
        let fold = |t: &str| -> Box<str> {
            if ignore_case {
                t.to_lowercase().into()
            } else {
                t.into()
            }
        };
        let mut text = TextMatch {
            terms: terms.into_iter().map(fold).collect(),
            byte_terms: Vec::new(),
            ignore_case,
            tags: tags.into_iter().map(|t| t.to_lowercase().into()).collect(),
            regex,
            from: from.map(Box::from),
        };
        if !text.ignore_case && text.tags.is_empty() && text.regex.is_none() && text.from.is_none()
        {
            text.byte_terms = text
                .terms
                .iter()
                .map(|t| memchr::memmem::Finder::new(t.as_bytes()).into_owned())
                .collect();
        }
        text
    }

    /// Whether a stored line matches, decided on its bytes when the terms
    /// alone decide and its text holds no escape (a term then matches the
    /// escaped bytes exactly when it matches the text); `None` otherwise.
    pub(crate) fn matches_stored(&self, line: &[u8]) -> Option<bool> {
        if self.byte_terms.is_empty() {
            return None;
        }
        let text = entry::stored_text(line)?;
        if memchr::memchr(b'\\', text).is_some() {
            return None;
        }
        Some(self.byte_terms.iter().all(|t| t.find(text).is_some()))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.terms.is_empty() && self.tags.is_empty() && self.regex.is_none() && self.from.is_none()
    }

    pub fn matches(&self, text: &str, author: Option<&str>) -> bool {
        if self
            .from
            .as_deref()
            .is_some_and(|from| author != Some(from))
        {
            return false;
        }
        let folded;
        let haystack = if self.ignore_case && !self.terms.is_empty() {
            folded = text.to_lowercase();
            folded.as_str()
        } else {
            text
        };
        self.terms.iter().all(|t| haystack.contains(&**t))
            && self.tags.iter().all(|t| has_tag(text, t))
            && self.regex.as_ref().is_none_or(|r| r.is_match(text))
    }

    /// A term every matching line holds as bytes, for the fast scan.
    pub(crate) fn needle(&self) -> Option<&str> {
        if self.ignore_case {
            return None;
        }
        self.terms.iter().map(|t| &**t).find(|t| plain_needle(t))
    }
}

/// Whether a stored line's text and author satisfy `text`. Only the
/// fields it needs are read: a search over a large diary calls this for
/// every line that holds its word.
pub(crate) fn text_matches(text: &TextMatch, line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if let Some(matched) = text.matches_stored(line) {
        return matched;
    }
    let Some((escaped_text, attrs)) = entry::stored_text_and_attrs(line) else {
        return false;
    };
    let author = entry::author_in(attrs);
    if memchr::memchr(b'\\', escaped_text.as_bytes()).is_some() {
        entry::unescape(escaped_text).is_some_and(|t| text.matches(&t, author))
    } else {
        text.matches(escaped_text, author)
    }
}

/// The `#tags` of a text, lowercase, each once per place it appears.
pub fn tags_in(text: &str) -> impl Iterator<Item = String> + '_ {
    text.match_indices('#').filter_map(move |(at, _)| {
        // `a#b` and `C#` are not tags: a tag starts a word.
        let before = text[..at].chars().next_back();
        if before.is_some_and(is_tag_char) {
            return None;
        }
        let word: String = text[at + 1..]
            .chars()
            .take_while(|&c| is_tag_char(c))
            .collect();
        (!word.is_empty()).then(|| word.to_lowercase())
    })
}

fn has_tag(text: &str, tag: &str) -> bool {
    text.contains('#') && tags_in(text).any(|t| t == tag)
}

/// Whether `words` are stored as they are: no character that the file
/// escapes, so their bytes are in the line of every entry that holds them.
fn plain_needle(words: &str) -> bool {
    !words.is_empty()
        && !words
            .bytes()
            .any(|b| matches!(b, b'\\' | b'\n' | b'\t' | b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_matched_on_its_bytes_is_matched_as_its_text_is() {
        let lines = [
            "1\t2026-11-26T14:00:03.118+00:00\train on the river",
            "2\t2026-11-26T14:00:03.118+00:00\tdry day\treq=rain-1\tby=rain",
            "3\t2026-11-26T14:00:03.118+00:00\t今天下雨了 rain",
            "4\t2026-11-26T14:00:03.118+00:00\tra\\nin and \\\\rain",
            "5\t2026-11-26T14:00:03.118+00:00\t",
        ];
        for terms in [
            vec!["rain"],
            vec!["rain", "river"],
            vec!["下雨"],
            vec!["nin"],
        ] {
            let text = TextMatch::new(terms.iter().copied(), false, [], None, None);
            for line in lines {
                let e = entry::decode_line(line.as_bytes()).unwrap();
                let by_text = text.matches(&e.text(), e.author());
                assert_eq!(
                    text_matches(&text, line.as_bytes()),
                    by_text,
                    "{terms:?} {line}"
                );
            }
        }
    }
}

//! Container logs as `kubectl logs` wants them, read from the CRI log files containerd writes.
//!
//! A CRI log file holds one record a line: `<RFC3339Nano time> <stdout|stderr> <P|F> <text>`.
//! containerd splits long lines into partial (`P`) records ended by a full (`F`) one; the
//! [`Decoder`] joins them back into the line the container wrote, stamped with the time of
//! its first piece. [`Options`] holds the query parameters of upstream's kubelet
//! (`tailLines`, `sinceSeconds`/`sinceTime`, `timestamps`, `limitBytes`, `follow`,
//! `previous`); [`render`] applies them to lines, [`Limit`] counts `limitBytes` across the
//! chunks of a followed log.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// What can be wrong with a log request's parameters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OptionsError {
    #[error("invalid value {value:?} for {name}: {why}")]
    Invalid {
        name: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The query parameters of `GET /containerLogs/...` (and of `pods/log`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// Only the last N lines.
    pub tail_lines: Option<usize>,
    /// Only lines at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
}

fn flag(v: &str) -> bool {
    matches!(v, "true" | "1" | "True" | "TRUE" | "t" | "T")
}

impl Options {
    /// Parses a query string; `now` anchors `sinceSeconds`.
    pub fn parse(query: Option<&str>, now: OffsetDateTime) -> Result<Options, OptionsError> {
        let mut o = Options::default();
        let int = |name: &'static str, v: &str| -> Result<i64, OptionsError> {
            v.parse::<i64>().map_err(|_| OptionsError::Invalid {
                name,
                value: v.to_string(),
                why: "not an integer",
            })
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "follow" => o.follow = flag(&v),
                "previous" => o.previous = flag(&v),
                "timestamps" => o.timestamps = flag(&v),
                "tailLines" => {
                    let n = int("tailLines", &v)?;
                    // Negative means "all", as upstream.
                    o.tail_lines = usize::try_from(n).ok();
                }
                "limitBytes" => {
                    let n = int("limitBytes", &v)?;
                    if n < 1 {
                        return Err(OptionsError::Invalid {
                            name: "limitBytes",
                            value: v.to_string(),
                            why: "must be greater than 0",
                        });
                    }
                    o.limit_bytes = u64::try_from(n).ok();
                }
                "sinceSeconds" => {
                    let n = int("sinceSeconds", &v)?;
                    if n < 1 {
                        return Err(OptionsError::Invalid {
                            name: "sinceSeconds",
                            value: v.to_string(),
                            why: "must be greater than 0",
                        });
                    }
                    o.since = Some(now - time::Duration::seconds(n));
                }
                "sinceTime" => {
                    let t =
                        OffsetDateTime::parse(&v, &Rfc3339).map_err(|_| OptionsError::Invalid {
                            name: "sinceTime",
                            value: v.to_string(),
                            why: "not an RFC 3339 time",
                        })?;
                    o.since = Some(t);
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

/// One line as the container wrote it (partial records joined).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The time of the line's first record, as written in the file (RFC3339Nano).
    pub time: String,
    pub stream: String,
    /// The text, with its newline unless the line was never finished.
    pub text: Vec<u8>,
}

impl Line {
    fn at(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.time, &Rfc3339).ok()
    }
}

/// One record of a CRI log file.
struct Record<'a> {
    time: &'a str,
    stream: &'a str,
    partial: bool,
    text: &'a [u8],
}

fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or(b"");
    if time.is_empty() || !matches!(stream, "stdout" | "stderr") {
        return None;
    }
    // The tag may carry more fields after a ':' in future formats; the first says P or F.
    let partial = tag.split(|b| *b == b':').next() == Some(b"P");
    Some(Record {
        time,
        stream,
        partial,
        text,
    })
}

/// Turns the bytes of a CRI log file, fed in any chunks, into [`Line`]s.
#[derive(Default)]
pub struct Decoder {
    /// Bytes of a record whose newline has not been read yet.
    raw: Vec<u8>,
    /// Partial records waiting for their full one.
    pending: Option<Line>,
}

impl Decoder {
    /// Decodes `chunk`, returning every line it completed. Malformed records are skipped.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Line> {
        self.raw.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(nl) = self.raw[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl;
            if let Some(r) = parse_record(&self.raw[start..end]) {
                let line = self.pending.get_or_insert_with(|| Line {
                    time: r.time.to_string(),
                    stream: r.stream.to_string(),
                    text: Vec::new(),
                });
                line.text.extend_from_slice(r.text);
                if !r.partial {
                    line.text.push(b'\n');
                    out.extend(self.pending.take());
                }
            }
            start = end + 1;
        }
        self.raw.drain(..start);
        out
    }

    /// At the end of a file that will not grow: the line still waiting for its full record.
    pub fn finish(&mut self) -> Option<Line> {
        self.raw.clear();
        self.pending.take()
    }
}

/// Counts bytes against `limitBytes`.
#[derive(Debug)]
pub struct Limit {
    left: Option<u64>,
}

impl Limit {
    pub fn new(limit: Option<u64>) -> Limit {
        Limit { left: limit }
    }

    /// Whether nothing more may be sent.
    pub fn reached(&self) -> bool {
        self.left == Some(0)
    }

    /// Cuts `out` to what may still be sent and counts it.
    fn take(&mut self, out: &mut Vec<u8>) {
        if let Some(left) = self.left.as_mut() {
            let keep = usize::try_from(*left).unwrap_or(usize::MAX).min(out.len());
            out.truncate(keep);
            *left -= keep as u64;
        }
    }
}

/// The bytes to send for `lines`: those at or after `since`, prefixed with their time when
/// `timestamps`, cut at the limit.
pub fn render(lines: &[Line], opts: &Options, limit: &mut Limit) -> Vec<u8> {
    let mut out = Vec::new();
    for l in lines {
        if let Some(since) = opts.since {
            if l.at().is_some_and(|t| t < since) {
                continue;
            }
        }
        if opts.timestamps {
            out.extend_from_slice(l.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&l.text);
    }
    limit.take(&mut out);
    out
}

/// The lines of a whole file's bytes, the last `tail` of them when given (counted after
/// `since`, as upstream applies both).
pub fn initial_lines(
    decoder: &mut Decoder,
    data: &[u8],
    opts: &Options,
    at_end: bool,
) -> Vec<Line> {
    let mut lines = decoder.feed(data);
    if at_end {
        lines.extend(decoder.finish());
    }
    if let Some(since) = opts.since {
        lines.retain(|l| l.at().is_none_or(|t| t >= since));
    }
    if let Some(n) = opts.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "2026-11-25T14:17:02.06097154Z stdout F one\n\
2026-11-25T14:17:03Z stderr F two\n\
2026-11-25T14:17:04.1Z stdout P thr\n\
2026-11-25T14:17:04.2Z stdout P e\n\
2026-11-25T14:17:04.3Z stdout F e\n\
garbage\n\
2026-11-25T14:17:05.5Z stdout F \n\
2026-11-25T14:17:06Z stdout F last\n";

    fn text(lines: &[Line]) -> String {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.text).into_owned())
            .collect()
    }

    #[test]
    fn joins_partial_records_and_skips_garbage() {
        let mut d = Decoder::default();
        let lines = d.feed(FILE.as_bytes());
        assert_eq!(text(&lines), "one\ntwo\nthree\n\nlast\n");
        assert_eq!(lines[1].stream, "stderr");
        assert_eq!(lines[2].time, "2026-11-25T14:17:04.1Z");
        assert!(d.finish().is_none());
    }

    #[test]
    fn any_chunking_gives_the_same_lines() {
        let whole = Decoder::default().feed(FILE.as_bytes());
        for size in [1, 2, 7, 30] {
            let mut d = Decoder::default();
            let mut lines = Vec::new();
            for c in FILE.as_bytes().chunks(size) {
                lines.extend(d.feed(c));
            }
            assert_eq!(lines, whole, "chunks of {size}");
        }
    }

    #[test]
    fn an_unfinished_line_comes_out_at_the_end_only() {
        let mut d = Decoder::default();
        let lines = d.feed(b"2026-11-25T14:17:04.1Z stdout P abc\n2026-11-25T14:17:04.2Z stdout F");
        assert!(lines.is_empty());
        let last = d.finish().expect("pending line");
        assert_eq!(last.text, b"abc");
    }

    #[test]
    fn tail_since_timestamps_and_limit() {
        let opts = |q: &str| {
            Options::parse(
                Some(q),
                OffsetDateTime::parse("2026-11-25T14:17:10Z", &Rfc3339).expect("time"),
            )
            .expect("options")
        };
        let o = opts("tailLines=2");
        let lines = initial_lines(&mut Decoder::default(), FILE.as_bytes(), &o, true);
        assert_eq!(text(&lines), "\nlast\n");

        // sinceSeconds=7 from 14:17:10 keeps 14:17:03 onwards; the joined line counts from
        // its first record.
        let o = opts("sinceSeconds=7&timestamps=true");
        let lines = initial_lines(&mut Decoder::default(), FILE.as_bytes(), &o, true);
        let out = render(&lines, &o, &mut Limit::new(o.limit_bytes));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "2026-11-25T14:17:03Z two\n2026-11-25T14:17:04.1Z three\n2026-11-25T14:17:05.5Z \n2026-11-25T14:17:06Z last\n"
        );
        let o = opts("sinceTime=2026-11-25T14:17:05Z");
        let lines = initial_lines(&mut Decoder::default(), FILE.as_bytes(), &o, true);
        assert_eq!(text(&lines), "\nlast\n");

        let o = opts("limitBytes=6");
        let lines = initial_lines(&mut Decoder::default(), FILE.as_bytes(), &o, true);
        let mut limit = Limit::new(o.limit_bytes);
        assert_eq!(render(&lines, &o, &mut limit), b"one\ntw");
        assert!(limit.reached());
        assert!(render(&lines, &o, &mut limit).is_empty());
    }

    #[test]
    fn bad_parameters_are_refused() {
        let now = OffsetDateTime::UNIX_EPOCH;
        assert!(Options::parse(Some("tailLines=x"), now).is_err());
        assert!(Options::parse(Some("limitBytes=0"), now).is_err());
        assert!(Options::parse(Some("sinceSeconds=-1"), now).is_err());
        assert!(Options::parse(Some("sinceTime=yesterday"), now).is_err());
        let o = Options::parse(Some("follow=true&previous=1&tailLines=-1"), now).expect("ok");
        assert!(o.follow && o.previous && o.tail_lines.is_none());
    }
}

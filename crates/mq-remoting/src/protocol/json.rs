//! The JSON header (serialize type 0, spec §1.3): written by hand in fastjson's order, read
//! leniently (numbers and booleans inside `extFields`, unknown fields, missing remark).

use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::command::{ExtFields, LanguageCode, RemotingCommand, SerializeType};
use super::ext::{FieldSink, KeyOrder};
use super::out::{self, Out, write_sized};
use crate::error::DecodeError;

/// Appends the JSON header of `cmd` to `dst`, properties in the alphabetical order fastjson uses:
/// `code, extFields, flag, language, opaque, remark, serializeTypeCurrentRPC, version`.
/// Null properties (remark, empty extFields) are omitted, as fastjson does.
///
/// The text is written into room made in `dst` up front ([`Out`]), sized for a header whose
/// strings need no escapes; when escapes make it longer, the writer has counted the exact
/// length and writes once more into that much room.
pub(crate) fn encode_header(cmd: &RemotingCommand, dst: &mut BytesMut) {
    let room = FIXED_TEXT
        + cmd.remark.as_ref().map_or(0, |r| r.len() + 12)
        + cmd.ext_fields.json_len_unescaped();
    write_sized(dst, room, |out| write_header(cmd, out));
}

/// The longest text of a header besides its strings: property names, punctuation, five `i32`
/// values of at most 11 characters and a language name of at most 7.
const FIXED_TEXT: usize = 192;

impl Out<'_> {
    /// A member's key and colon after `sep` (a comma, or the text opening `extFields`): in one
    /// copy for a key of one character that needs no escape (the V2 send header's), without a
    /// scan for a plain key of up to 16 bytes (typed answers').
    #[inline]
    fn key(&mut self, sep: &[u8], s: &str) {
        let b = s.as_bytes();
        if let &[comma] = sep {
            // The keys of typed answers (`queueOffset`, `MSG_REGION`): seen plain in a word
            // or two, written without a scan.
            if (2..=16).contains(&b.len()) && !short_has_stop(b) {
                self.byte(comma);
                self.quoted(b);
                self.byte(b':');
                return;
            }
        }
        if let &[c] = b
            && !STOP[usize::from(c)]
        {
            // A key of one character (the V2 send header's first, after the text opening
            // `extFields`; the others are written by `JsonFields` with their values).
            self.put(sep);
            self.array([b'"', c, b'"', b':']);
            return;
        }
        self.put(sep);
        self.string(s);
        self.byte(b':');
    }

    /// A JSON string literal.
    #[inline(always)]
    fn string(&mut self, s: &str) {
        let b = s.as_bytes();
        let stop = if (2..=16).contains(&b.len()) {
            short_has_stop(b).then(|| find_stop(b)).flatten()
        } else {
            find_stop(b)
        };
        match stop {
            None => self.quoted(b),
            Some(n) => {
                self.byte(b'"');
                self.escaped(b, n);
                self.byte(b'"');
            }
        }
    }

    /// `b` between quotes, under one bounds check.
    #[inline]
    fn quoted(&mut self, b: &[u8]) {
        let n = b.len();
        if let Some(d) = self.buf.get_mut(self.at..self.at + n + 2) {
            d[0] = b'"';
            out::copy_short(&mut d[1..=n], b);
            d[n + 1] = b'"';
        }
        self.at += n + 2;
    }

    /// `head`, then `b` (at most 16 bytes, none to escape), then a closing quote, under one
    /// bounds check.
    #[inline(always)]
    fn member(&mut self, head: [u8; 6], b: &[u8]) {
        let n = b.len();
        if let Some(d) = self.buf.get_mut(self.at..self.at + n + 7) {
            d[..6].copy_from_slice(&head);
            out::copy_short(&mut d[6..6 + n], b);
            d[6 + n] = b'"';
        }
        self.at += n + 7;
    }

    /// The text of a string that holds a byte to escape, the first at `first`.
    ///
    /// A word at a time while there is room: each step stores the next eight bytes whole,
    /// keeps those before the first byte to escape ([`stop_flags`]) and stores that byte's
    /// escape over the rest. A properties string has a separator every few bytes; a run, a
    /// copy and an escape for each cost about three times as much.
    #[inline(never)]
    fn escaped(&mut self, s: &[u8], first: usize) {
        self.put(&s[..first]);
        let mut i = first;
        if let Some(d) = self.buf.get_mut(self.at..) {
            let mut j = 0;
            // A step writes at most 15 bytes: a word, and an escape from within it.
            while let (Some(chunk), Some(to)) = (s.get(i..i + 8), d.get_mut(j..j + 16)) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                to[..8].copy_from_slice(&word);
                let flags = stop_flags(u64::from_le_bytes(word));
                if flags == 0 {
                    i += 8;
                    j += 8;
                    continue;
                }
                let k = (flags.trailing_zeros() / 8) as usize;
                let (escape, len) = ESCAPES[usize::from(word[k])];
                to[k..k + 8].copy_from_slice(&escape);
                i += k + 1;
                j += k + usize::from(len);
            }
            self.at += j;
        }
        let mut rest = &s[i..];
        while let Some(n) = find_stop(rest) {
            self.put(&rest[..n]);
            let (escape, len) = ESCAPES[usize::from(rest[n])];
            self.put(&escape[..usize::from(len)]);
            rest = &rest[n + 1..];
        }
        self.put(rest);
    }
}

/// Typed fields written as `extFields` members: the opening text comes with the first field.
struct JsonFields<'o, 'a> {
    out: &'o mut Out<'a>,
    order: KeyOrder,
}

impl JsonFields<'_, '_> {
    fn key(&mut self, key: &'static str) {
        let sep: &[u8] = if self.order.see(key) {
            b",\"extFields\":{"
        } else {
            b","
        };
        self.out.key(sep, key);
    }

    /// The key's one character when it is one that needs no escape and follows a smaller one
    /// (so its separator is a comma), as the V2 send header's keys after `a` do; the key is
    /// then seen. `None` leaves the key to be written in full.
    #[inline(always)]
    fn letter(&mut self, key: &'static str) -> Option<u8> {
        match key.as_bytes() {
            &[c] if !STOP[usize::from(c)] => self.order.see_letter(key),
            _ => None,
        }
    }

    /// A field beyond the fast path of [`FieldSink::str_field`]: its key is seen here when
    /// the fast path left it unseen (a long or escaped value), or seen again for nothing.
    #[inline(never)]
    fn str_field_in_full(&mut self, key: &'static str, value: &str) {
        match self.letter(key) {
            Some(c) => self.out.array([b',', b'"', c, b'"', b':']),
            None => self.key(key),
        }
        self.out.string(value);
    }

    /// A field beyond the fast path of [`FieldSink::int_field`], its key as for
    /// [`JsonFields::str_field_in_full`].
    #[inline(never)]
    fn int_field_in_full(&mut self, key: &'static str, value: i64) {
        match self.letter(key) {
            Some(c) => self.out.array([b',', b'"', c, b'"', b':', b'"']),
            None => {
                self.key(key);
                self.out.byte(b'"');
            }
        }
        self.out.int(value);
        self.out.byte(b'"');
    }
}

/// Each field of a send header is one call; the common ones (a one-letter key after the first,
/// a short plain text or a one-digit number) are written under one bounds check, in a function
/// small enough to need no saved registers, the rest out of line.
impl FieldSink for JsonFields<'_, '_> {
    fn str_field(&mut self, key: &'static str, value: &str) {
        let b = value.as_bytes();
        if b.len() <= 16
            && !short_has_stop(b)
            && let Some(c) = self.letter(key)
        {
            self.out.member([b',', b'"', c, b'"', b':', b'"'], b);
            return;
        }
        self.str_field_in_full(key, value);
    }

    fn int_field(&mut self, key: &'static str, value: i64) {
        // Most numbers of a send header are one digit (queue id, flags, counts): `,"e":"3"`
        // is then one word.
        if let Ok(d @ 0..=9) = u8::try_from(value)
            && let Some(c) = self.letter(key)
        {
            self.out
                .array([b',', b'"', c, b'"', b':', b'"', b'0' + d, b'"']);
            return;
        }
        self.int_field_in_full(key, value);
    }
}

fn write_header(cmd: &RemotingCommand, out: &mut Out<'_>) {
    out.put(b"{\"code\":");
    out.int(i64::from(cmd.code));
    let typed_written = cmd.ext_fields.typed_fields().is_some_and(|typed| {
        let at = out.at;
        let mut sink = JsonFields {
            out: &mut *out,
            order: KeyOrder::default(),
        };
        typed.write_fields(&mut sink);
        let (wrote, sorted) = (sink.order.any(), sink.order.sorted());
        if wrote && sorted {
            out.byte(b'}');
        } else if !sorted {
            // Not in key order after all: written again below from the sorted entries.
            out.at = at;
        }
        sorted
    });
    if !typed_written && !cmd.ext_fields.is_empty() {
        out.put(b",\"extFields\":{");
        for (i, (k, v)) in cmd.ext_fields.iter().enumerate() {
            if i > 0 {
                out.byte(b',');
            }
            out.string(k);
            out.byte(b':');
            out.string(v);
        }
        out.byte(b'}');
    }
    out.put(b",\"flag\":");
    out.int(i64::from(cmd.flag));
    out.put(b",\"language\":\"");
    out.put(cmd.language.name().as_bytes());
    out.put(b"\",\"opaque\":");
    out.int(i64::from(cmd.opaque));
    if let Some(remark) = &cmd.remark {
        out.put(b",\"remark\":");
        out.string(remark);
    }
    out.put(b",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":");
    out.int(i64::from(cmd.version));
    out.byte(b'}');
}

/// Parses a JSON header into a command with an empty body.
///
/// Headers as Java, Go and we write them take a single pass that copies every ext-field key
/// and value into one arena ([`fast::decode`]); anything unusual (numbers inside `extFields`,
/// nested values, repeated properties, floats, malformed text) is left to the serde reader
/// below, which decides what is accepted. Both give the same command for any input the fast
/// pass accepts.
pub(crate) fn decode_header(src: &[u8]) -> Result<RemotingCommand, DecodeError> {
    if let Some(cmd) = fast::decode(src) {
        return Ok(cmd);
    }
    decode_header_serde(src)
}

/// The lenient serde reader: the reference for what a JSON header means.
pub(crate) fn decode_header_serde(src: &[u8]) -> Result<RemotingCommand, DecodeError> {
    let raw: RawHeader = serde_json::from_slice(src).map_err(|_| DecodeError::InvalidJsonHeader)?;
    Ok(RemotingCommand {
        code: raw.code.0,
        language: raw.language.0,
        version: raw.version.0,
        opaque: raw.opaque.0,
        flag: raw.flag.0,
        remark: raw.remark,
        ext_fields: raw.ext_fields.map(|e| e.0).unwrap_or_default(),
        body: Bytes::new(),
        serialize_type: SerializeType::Json,
    })
}

pub(in crate::protocol) mod fast {
    //! The single-pass reader for well-formed headers. Every function returns `None` as soon as
    //! the input leaves the common shape; the caller then asks the serde reader.

    use super::language_from_ordinal;
    use crate::protocol::command::{ExtFields, LanguageCode, RemotingCommand, SerializeType};
    use crate::protocol::ext::{Entry, Span, key_before, span_at};

    /// The value of one hexadecimal digit.
    fn hex_digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }

    pub(in crate::protocol) fn decode(src: &[u8]) -> Option<RemotingCommand> {
        // Checked once: runs of text are then sliced out at ASCII delimiters, which are char
        // boundaries. Bytes that are not UTF-8 make JSON invalid anywhere, strings included.
        let text = std::str::from_utf8(src).ok()?;
        let mut s = Scan {
            t: text,
            b: src,
            i: 0,
        };
        let mut cmd = RemotingCommand {
            serialize_type: SerializeType::Json,
            ..RemotingCommand::default()
        };
        let mut seen = 0u8;
        s.eat(b'{')?;
        if s.peek()? == b'}' {
            s.i += 1;
        } else {
            loop {
                let bit = match s.property()? {
                    Property::Code => {
                        cmd.code = s.lenient_int()?;
                        1
                    }
                    Property::Flag => {
                        cmd.flag = s.lenient_int()?;
                        2
                    }
                    Property::Opaque => {
                        cmd.opaque = s.lenient_int()?;
                        4
                    }
                    Property::Version => {
                        cmd.version = s.lenient_int()?;
                        8
                    }
                    Property::Language => {
                        cmd.language = s.language()?;
                        16
                    }
                    Property::Remark => {
                        cmd.remark = if s.null() {
                            None
                        } else {
                            let mut r = String::new();
                            s.string_into(Some(&mut r))?;
                            Some(r)
                        };
                        32
                    }
                    Property::ExtFields => {
                        if !s.null() {
                            cmd.ext_fields = s.ext_fields()?;
                        }
                        64
                    }
                    Property::Other => {
                        // The serialize type as every writer puts it, else any scalar.
                        if !s.literal(b"\"JSON\"") {
                            s.skip_scalar()?;
                        }
                        0
                    }
                };
                // serde refuses a repeated property: let it say so.
                if seen & bit != 0 {
                    return None;
                }
                seen |= bit;
                match s.peek()? {
                    b',' => s.i += 1,
                    b'}' => {
                        s.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        s.ws();
        (s.i == src.len()).then_some(cmd)
    }

    /// A property of the header object.
    #[derive(Clone, Copy)]
    enum Property {
        Code,
        ExtFields,
        Flag,
        Language,
        Opaque,
        Remark,
        Version,
        /// Unknown, or `serializeTypeCurrentRPC` (whose value the JSON reader already knows).
        Other,
    }

    /// The property named by `name`.
    fn named(name: &[u8]) -> Property {
        match name {
            b"code" => Property::Code,
            b"extFields" => Property::ExtFields,
            b"flag" => Property::Flag,
            b"language" => Property::Language,
            b"opaque" => Property::Opaque,
            b"remark" => Property::Remark,
            b"version" => Property::Version,
            _ => Property::Other,
        }
    }

    struct Scan<'a> {
        /// The header, known to be UTF-8.
        t: &'a str,
        /// The same bytes.
        b: &'a [u8],
        i: usize,
    }

    impl<'a> Scan<'a> {
        fn ws(&mut self) {
            while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
                self.i += 1;
            }
        }

        fn peek(&mut self) -> Option<u8> {
            self.ws();
            self.b.get(self.i).copied()
        }

        fn eat(&mut self, c: u8) -> Option<()> {
            (self.peek()? == c).then(|| self.i += 1)
        }

        fn literal(&mut self, word: &[u8]) -> bool {
            self.ws();
            let hit = self.b.get(self.i..self.i + word.len()) == Some(word);
            if hit {
                self.i += word.len();
            }
            hit
        }

        /// A property's name and its colon, the cursor then at its value.
        fn property(&mut self) -> Option<Property> {
            // As writers put it: no space, a name without escapes, the colon right after;
            // each compared whole, its length known here.
            let rest = self.b.get(self.i..).unwrap_or_default();
            let at = |spelled: &[u8], property| {
                rest.starts_with(spelled)
                    .then_some((spelled.len(), property))
            };
            let known = match rest.get(1) {
                Some(b'c') => at(b"\"code\":", Property::Code),
                Some(b'e') => at(b"\"extFields\":", Property::ExtFields),
                Some(b'f') => at(b"\"flag\":", Property::Flag),
                Some(b'l') => at(b"\"language\":", Property::Language),
                Some(b'o') => at(b"\"opaque\":", Property::Opaque),
                Some(b'r') => at(b"\"remark\":", Property::Remark),
                Some(b's') => at(b"\"serializeTypeCurrentRPC\":", Property::Other),
                Some(b'v') => at(b"\"version\":", Property::Version),
                _ => None,
            };
            if let Some((len, property)) = known {
                self.i += len;
                return Some(property);
            }
            let name = self.raw_string()?;
            self.eat(b':')?;
            Some(named(name.as_bytes()))
        }

        fn null(&mut self) -> bool {
            self.literal(b"null")
        }

        /// Moves the cursor to the next [`STOP`] byte; `None` at the end of the input.
        fn run(&mut self) -> Option<&'a str> {
            let start = self.i;
            let rest = self.b.get(start..)?;
            let n = super::find_stop(rest)?;
            self.i = start + n;
            self.t.get(start..self.i)
        }

        /// After an opening quote: where the string's text starts and ends when it holds no
        /// escape, the cursor then past its closing quote; `None` (the cursor unmoved) for a
        /// string with escapes, or none that ends. Found by bytes alone: a text that ends at a
        /// quote starts and ends at char boundaries.
        fn plain(&mut self) -> Option<(usize, usize)> {
            let start = self.i;
            let end = start + super::find_stop(self.b.get(start..)?)?;
            (self.b.get(end) == Some(&b'"')).then(|| {
                self.i = end + 1;
                (start, end)
            })
        }

        /// A string without escapes, as raw bytes (property names).
        fn raw_string(&mut self) -> Option<&'a str> {
            self.eat(b'"')?;
            let (start, end) = self.plain()?;
            self.t.get(start..end)
        }

        /// A string literal, unescaped into `out` (or only checked when `out` is `None`).
        fn string_into(&mut self, out: Option<&mut String>) -> Option<()> {
            self.eat(b'"')?;
            self.string_rest(out)
        }

        /// The rest of a string literal whose opening quote is behind the cursor.
        fn string_rest(&mut self, mut out: Option<&mut String>) -> Option<()> {
            loop {
                let run = self.run()?;
                if let Some(o) = out.as_deref_mut() {
                    o.push_str(run);
                }
                match self.b[self.i] {
                    b'"' => {
                        self.i += 1;
                        return Some(());
                    }
                    b'\\' => {
                        // The common escape in headers, `\u00XX` below 0x80 (the separators of
                        // a properties string), is one byte of text.
                        if let Some(&[b'u', b'0', b'0', hi @ b'0'..=b'7', lo]) =
                            self.b.get(self.i + 1..self.i + 6)
                            && let Some(lo) = hex_digit(lo)
                        {
                            self.i += 6;
                            if let Some(o) = out.as_deref_mut() {
                                o.push(char::from((hi - b'0') << 4 | lo));
                            }
                            continue;
                        }
                        let c = self.escape()?;
                        if let Some(o) = out.as_deref_mut() {
                            o.push(c);
                        }
                    }
                    // A raw control character: serde refuses it.
                    _ => return None,
                }
            }
        }

        /// The character of the escape at the cursor (a backslash).
        fn escape(&mut self) -> Option<char> {
            // The common escape in headers: `\u00XX`, the separators of a properties string.
            if let Some(&[b'u', b'0', b'0', hi, lo]) = self.b.get(self.i + 1..self.i + 6)
                && let (Some(hi), Some(lo)) = (hex_digit(hi), hex_digit(lo))
            {
                self.i += 6;
                return Some(char::from(hi << 4 | lo));
            }
            let e = *self.b.get(self.i + 1)?;
            self.i += 2;
            Some(match e {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let hi = self.hex4()?;
                    match hi {
                        0xD800..=0xDBFF => {
                            (self.b.get(self.i..self.i + 2)? == b"\\u").then_some(())?;
                            self.i += 2;
                            let lo = self.hex4()?;
                            (0xDC00..=0xDFFF).contains(&lo).then_some(())?;
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                        }
                        _ => char::from_u32(hi)?,
                    }
                }
                _ => return None,
            })
        }

        fn hex4(&mut self) -> Option<u32> {
            let mut v = 0;
            for &c in self.b.get(self.i..self.i + 4)? {
                v = v * 16 + char::from(c).to_digit(16)?;
            }
            self.i += 4;
            Some(v)
        }

        /// An integer literal (no fraction or exponent; those are serde's).
        fn integer(&mut self) -> Option<i64> {
            self.ws();
            let start = self.i;
            let negative = self.b.get(start) == Some(&b'-');
            let digits = start + usize::from(negative);
            let mut end = digits;
            // Up to 19 digits fit a u64 unchecked; 20 or more overflow an i64 (a leading zero
            // is refused below), so serde may say what they are.
            let mut magnitude: u64 = 0;
            while let Some(&c) = self.b.get(end) {
                let d = c.wrapping_sub(b'0');
                if d > 9 {
                    break;
                }
                if end - digits == 19 {
                    return None;
                }
                magnitude = magnitude * 10 + u64::from(d);
                end += 1;
            }
            self.i = end;
            let n = end - digits;
            // No digits, a leading zero, `-0` (serde reads a float), or a fraction or exponent
            // next.
            if n == 0
                || (self.b[digits] == b'0' && (n > 1 || negative))
                || matches!(self.b.get(end), Some(b'.' | b'e' | b'E'))
            {
                return None;
            }
            if negative {
                0i64.checked_sub_unsigned(magnitude)
            } else {
                i64::try_from(magnitude).ok()
            }
        }

        /// An `int` property: a number, a numeric string or null (see `LenientInt`).
        fn lenient_int(&mut self) -> Option<i32> {
            // One to three digits and the end of the member, as writers put flag, version,
            // most codes and a young opaque: read by their pattern, without a loop.
            let digit = |c: u8| i32::from(c - b'0');
            let (n, len) = match *self.b.get(self.i..)? {
                [d @ b'0'..=b'9', b',' | b'}', ..] => (digit(d), 1),
                [a @ b'1'..=b'9', b @ b'0'..=b'9', b',' | b'}', ..] => {
                    (digit(a) * 10 + digit(b), 2)
                }
                [
                    a @ b'1'..=b'9',
                    b @ b'0'..=b'9',
                    c @ b'0'..=b'9',
                    b',' | b'}',
                    ..,
                ] => (digit(a) * 100 + digit(b) * 10 + digit(c), 3),
                _ => return self.lenient_int_in_full(),
            };
            self.i += len;
            Some(n)
        }

        /// [`Scan::lenient_int`] beyond three digits, and its other shapes.
        #[inline(never)]
        fn lenient_int_in_full(&mut self) -> Option<i32> {
            // A small non-negative number right at the cursor (an opaque grows past the fast
            // path's nine digits only after a long run).
            let mut n: u32 = 0;
            let mut at = self.i;
            while let Some(&c) = self.b.get(at) {
                let d = c.wrapping_sub(b'0');
                if d > 9 || at - self.i == 9 {
                    break;
                }
                n = n * 10 + u32::from(d);
                at += 1;
            }
            let digits = at - self.i;
            if (digits == 1 || (digits > 1 && self.b[self.i] != b'0'))
                && matches!(self.b.get(at), Some(b',' | b'}'))
            {
                self.i = at;
                return i32::try_from(n).ok();
            }
            match self.peek()? {
                b'"' => {
                    let mut t = String::new();
                    self.string_into(Some(&mut t))?;
                    t.trim().parse().ok()
                }
                b'n' => self.null().then_some(0),
                _ => i32::try_from(self.integer()?).ok(),
            }
        }

        /// The `language` property (see `LenientLanguage`).
        fn language(&mut self) -> Option<LanguageCode> {
            if self.b.get(self.i) == Some(&b'"') {
                self.i += 1;
                if let Some((start, end)) = self.plain() {
                    let name = self.t.get(start..end)?;
                    return Some(LanguageCode::from_name(name).unwrap_or(LanguageCode::Other));
                }
                self.i -= 1;
            }
            match self.peek()? {
                b'"' => {
                    let name = self.raw_string()?;
                    Some(LanguageCode::from_name(name).unwrap_or(LanguageCode::Other))
                }
                b'n' => self.null().then_some(LanguageCode::Other),
                _ => {
                    let v = self.integer()?;
                    Some(u64::try_from(v).map_or(LanguageCode::Other, language_from_ordinal))
                }
            }
        }

        /// `extFields` whose values are all strings or null (null entries are skipped).
        fn ext_fields(&mut self) -> Option<ExtFields> {
            // The arena starts as a copy of the whole header, so a key or value without
            // escapes is a span of it where it stands; escaped ones are unescaped onto its
            // end. Whether the keys arrive in order is seen on the way, so a sorted sender's
            // fields are not checked again.
            let mut arena = String::with_capacity(self.t.len() + 64);
            arena.push_str(self.t);
            let mut entries = Vec::with_capacity(16);
            let mut sorted = true;
            // The key before, as it stands in the header (an escaped key, rare, is not
            // compared: the fields are then sorted by `from_decoded`).
            let mut prev: Option<&[u8]> = None;
            self.eat(b'{')?;
            if self.peek()? == b'}' {
                self.i += 1;
                return Some(ExtFields::new());
            }
            loop {
                let key = match self.compact_key() {
                    Some(key) => key,
                    None => {
                        let key = self.string_span(&mut arena)?;
                        self.eat(b':')?;
                        key
                    }
                };
                let key_text = self.b.get(key.0 as usize..key.1 as usize);
                // A string, or null (skipped).
                let value = if self.b.get(self.i) == Some(&b'"') {
                    self.i += 1;
                    Some(self.string_text(&mut arena)?)
                } else if self.peek()? == b'"' {
                    Some(self.string_span(&mut arena)?)
                } else {
                    self.null().then_some(())?;
                    None
                };
                if let Some(value) = value {
                    if !entries.is_empty() {
                        sorted &= match (prev, key_text) {
                            (Some(a), Some(b)) => key_before(a, b),
                            _ => false,
                        };
                    }
                    prev = key_text;
                    entries.push(Entry::decoded(key, value));
                }
                let next = match self.b.get(self.i) {
                    Some(&c @ (b',' | b'}')) => c,
                    _ => self.peek()?,
                };
                self.i += 1;
                match next {
                    b',' => {}
                    b'}' => break,
                    _ => return None,
                }
            }
            Some(ExtFields::from_decoded(arena, entries, sorted))
        }

        /// The span of a string literal in `arena`, which begins with a copy of the header:
        /// where it stands when it holds no escape, else unescaped onto the arena's end.
        fn string_span(&mut self, arena: &mut String) -> Option<Span> {
            self.eat(b'"')?;
            self.string_text(arena)
        }

        /// [`Scan::string_span`] after the opening quote.
        #[inline]
        fn string_text(&mut self, arena: &mut String) -> Option<Span> {
            if let Some((start, end)) = self.plain() {
                return Some(span_at(start, end - start));
            }
            self.escaped_onto(arena)
        }

        /// A string with escapes, unescaped onto the arena's end: its span there.
        #[inline(never)]
        fn escaped_onto(&mut self, arena: &mut String) -> Option<Span> {
            let at = arena.len();
            self.string_rest(Some(arena))?;
            Some(span_at(at, arena.len() - at))
        }

        /// A member's key as writers put it, `"key":` with no space and no escape: its span,
        /// the cursor then past the colon; `None`, the cursor unmoved, for any other shape
        /// (read by [`Scan::string_span`]).
        #[inline]
        fn compact_key(&mut self) -> Option<Span> {
            let start = self.i + 1;
            // A key of one character (the V2 send header's) is seen without a scan.
            if let Some(&[b'"', c, b'"', b':']) = self.b.get(self.i..self.i + 4)
                && !super::STOP[usize::from(c)]
            {
                self.i += 4;
                return Some(span_at(start, 1));
            }
            if self.b.get(self.i) != Some(&b'"') {
                return None;
            }
            let end = start + super::find_stop(self.b.get(start..)?)?;
            if self.b.get(end..end + 2)? != b"\":" {
                return None;
            }
            self.i = end + 2;
            Some(span_at(start, end - start))
        }

        /// Skips an unknown property's value when it is a string, an integer or a literal.
        fn skip_scalar(&mut self) -> Option<()> {
            match self.peek()? {
                b'"' => self.string_into(None),
                b't' => self.literal(b"true").then_some(()),
                b'f' => self.literal(b"false").then_some(()),
                b'n' => self.null().then_some(()),
                _ => self.integer().map(drop),
            }
        }
    }
}

/// The escape of each [`STOP`] byte, padded to eight bytes, and its length: the short escapes
/// where JSON has them, `\u00XX` for the other control characters. Other bytes are never
/// looked up (their entry is the byte itself).
const ESCAPES: [([u8; 8], u8); 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [([0u8; 8], 1u8); 256];
    let mut c = 0;
    while c < 256 {
        t[c].0[0] = c as u8;
        c += 1;
    }
    c = 0;
    while c < 0x20 {
        t[c] = (
            [b'\\', b'u', b'0', b'0', HEX[c >> 4], HEX[c & 0xf], 0, 0],
            6,
        );
        c += 1;
    }
    let short: [(u8, u8); 7] = [
        (b'"', b'"'),
        (b'\\', b'\\'),
        (b'\n', b'n'),
        (b'\r', b'r'),
        (b'\t', b't'),
        (0x08, b'b'),
        (0x0c, b'f'),
    ];
    let mut k = 0;
    while k < short.len() {
        t[short[k].0 as usize] = ([b'\\', short[k].1, 0, 0, 0, 0, 0, 0], 2);
        k += 1;
    }
    t
};

/// Bytes a JSON string cannot hold raw: the quote, the backslash and the control characters.
/// The writer escapes them; the fast reader ends a run of plain text at them.
const STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The index of the first [`STOP`] byte in `b`, eight bytes at a time ([`stop_flags`]).
pub(super) fn find_stop(b: &[u8]) -> Option<usize> {
    let mut chunks = b.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let flags = stop_flags(u64::from_le_bytes(word));
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| STOP[usize::from(c)])
        .map(|n| at + n)
}

/// Whether `b`, of 2 to 16 bytes, holds a [`STOP`] byte: one or two words (overlapping, or
/// made of two overlapping halves), with no loop. A flag of [`stop_flags`] is only ever
/// spurious above a real one, so any flag means a stop.
#[inline]
fn short_has_stop(b: &[u8]) -> bool {
    let n = b.len();
    let word = |w: &[u8]| {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        u64::from_le_bytes(a)
    };
    let half = |w: &[u8]| {
        let mut a = [0u8; 4];
        a.copy_from_slice(w);
        u64::from(u32::from_le_bytes(a))
    };
    let flags = match n {
        8..=16 => stop_flags(word(&b[..8])) | stop_flags(word(&b[n - 8..])),
        4..=7 => stop_flags(half(&b[..4]) | half(&b[n - 4..]) << 32),
        _ => return b.iter().any(|&c| STOP[usize::from(c)]),
    };
    flags != 0
}

/// The high bit of each byte of the word `x` that may be a [`STOP`] byte: `(x - 0x01..) & !x &
/// 0x80..` flags its zero bytes, and `(x - 0x20..) & !x & 0x80..` its bytes below 0x20. A flag
/// can be spurious only above a real one (a borrow carries upwards), so the lowest flag of the
/// word, little-endian, is exact. Bytes of 0x80 and above are never flagged.
#[inline]
fn stop_flags(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let quote = x ^ (ONES * u64::from(b'"'));
    let backslash = x ^ (ONES * u64::from(b'\\'));
    (x.wrapping_sub(ONES * 0x20) & !x
        | quote.wrapping_sub(ONES) & !quote
        | backslash.wrapping_sub(ONES) & !backslash)
        & HIGH
}

#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    code: LenientInt,
    #[serde(default)]
    language: LenientLanguage,
    #[serde(default)]
    version: LenientInt,
    #[serde(default)]
    opaque: LenientInt,
    #[serde(default)]
    flag: LenientInt,
    #[serde(default)]
    remark: Option<String>,
    #[serde(default, rename = "extFields")]
    ext_fields: Option<LenientExtFields>,
}

/// An `int` property: a JSON number, a numeric string, or null (0), as fastjson accepts.
#[derive(Default)]
struct LenientInt(i32);

impl<'de> Deserialize<'de> for LenientInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LenientInt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 32-bit integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LenientInt, E> {
                i32::try_from(v).map(LenientInt).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LenientInt, E> {
                i32::try_from(v).map(LenientInt).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LenientInt, E> {
                v.trim().parse().map(LenientInt).map_err(E::custom)
            }
            fn visit_unit<E: de::Error>(self) -> Result<LenientInt, E> {
                Ok(LenientInt(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// The `language` property: the enum name, or (as fastjson also accepts) its ordinal.
/// Unknown names become `OTHER`, where Java would read null.
#[derive(Default)]
struct LenientLanguage(LanguageCode);

impl<'de> Deserialize<'de> for LenientLanguage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LenientLanguage;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a language name or ordinal")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LenientLanguage, E> {
                Ok(LenientLanguage(
                    LanguageCode::from_name(v).unwrap_or(LanguageCode::Other),
                ))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<LenientLanguage, E> {
                Ok(LenientLanguage(language_from_ordinal(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<LenientLanguage, E> {
                Ok(LenientLanguage(
                    u64::try_from(v).map_or(LanguageCode::Other, language_from_ordinal),
                ))
            }
            fn visit_unit<E: de::Error>(self) -> Result<LenientLanguage, E> {
                Ok(LenientLanguage(LanguageCode::Other))
            }
        }
        d.deserialize_any(V)
    }
}

/// An ordinal names a language only if RocketMQ defines it; anything else reads as `OTHER`,
/// since a JSON header can only carry defined names back out.
fn language_from_ordinal(v: u64) -> LanguageCode {
    match u8::try_from(v).map(LanguageCode::from_byte) {
        Ok(LanguageCode::Unknown(_)) | Err(_) => LanguageCode::Other,
        Ok(known) => known,
    }
}

/// `extFields`: values should be strings, but JS and C++ clients send numbers and booleans
/// (spec §10), which are kept as their JSON text. Null values are skipped.
struct LenientExtFields(ExtFields);

impl<'de> Deserialize<'de> for LenientExtFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LenientExtFields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LenientExtFields, A::Error> {
                let mut out = ExtFields::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value: serde_json::Value = map.next_value()?;
                    let text = match value {
                        serde_json::Value::Null => continue,
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    out.insert(key, text);
                }
                Ok(LenientExtFields(out))
            }
        }
        d.deserialize_map(V)
    }
}

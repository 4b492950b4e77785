//! [`ExtFields`]: a command's string fields (Java `extFields`), kept in one text arena.
//!
//! A header carries a dozen short fields. Holding them as a map of owned strings cost two
//! allocations per field on every request and response; here every key and value lives in one
//! `String` arena, keys known at compile time are not copied at all, and numbers are formatted
//! straight into the arena. Entries stay sorted by key, so encoding is deterministic.
//!
//! A typed header on the send path need not be turned into entries at all: given as
//! [`TypedFields`], it is written straight into the frame by the codec, with the same bytes,
//! and only turned into entries if someone reads or changes the fields.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

/// A range of the arena: start and end byte offsets.
pub(crate) type Span = (u32, u32);

/// Where a key's text is.
#[derive(Clone, Copy, Debug)]
enum Key {
    /// A key the program names (typed headers): never copied.
    Static(&'static str),
    /// A key that arrived on the wire or was built at run time, in the arena.
    Arena(Span),
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    key: Key,
    value: Span,
}

impl Entry {
    /// A field whose key and value are spans of the arena it is given to with
    /// [`ExtFields::from_decoded`].
    pub(crate) fn decoded(key: Span, value: Span) -> Self {
        Self {
            key: Key::Arena(key),
            value,
        }
    }
}

/// Where a typed header writes its fields: an [`ExtFields`], or the codec's output.
pub trait FieldSink {
    /// A field whose value is text.
    fn str_field(&mut self, key: &'static str, value: &str);
    /// A field whose value is an integer, written as Java's `Long.toString` does.
    fn int_field(&mut self, key: &'static str, value: i64);
}

/// A header that writes its own fields (see [`ExtFields::typed`]).
pub trait TypedFields: fmt::Debug + Send + Sync {
    /// Writes each field once, keys in strictly increasing order (the order [`ExtFields`]
    /// keeps, so that the wire bytes are those of the same fields inserted one by one).
    fn write_fields(&self, sink: &mut dyn FieldSink);
    /// About how many bytes the keys and values take together (room made for them).
    fn text_len_hint(&self) -> usize;
}

impl FieldSink for ExtFields {
    fn str_field(&mut self, key: &'static str, value: &str) {
        self.insert(key, value);
    }

    fn int_field(&mut self, key: &'static str, value: i64) {
        self.insert_int(key, value);
    }
}

/// Whether a typed header's keys come in strictly increasing order, seen one at a time by an
/// encoder that writes them straight into a frame (out of order, it writes the sorted entries
/// instead, so the bytes stay those of the same fields inserted one by one).
#[derive(Default)]
pub(crate) struct KeyOrder {
    last: Option<&'static str>,
    out_of_order: bool,
}

impl KeyOrder {
    /// Notes `key`; whether it is the first.
    pub(crate) fn see(&mut self, key: &'static str) -> bool {
        let first = match self.last {
            None => true,
            Some(last) => {
                self.out_of_order |= !key_before(last.as_bytes(), key.as_bytes());
                false
            }
        };
        self.last = Some(key);
        first
    }

    /// Notes `key` when it is one byte and follows a key of one byte that is smaller (the V2
    /// send header's keys after the first), and returns that byte; otherwise notes nothing, for
    /// [`KeyOrder::see`] to decide. No call: encoders write such keys in a function that saves
    /// no registers.
    #[inline(always)]
    pub(crate) fn see_letter(&mut self, key: &'static str) -> Option<u8> {
        match (key.as_bytes(), self.last.map(str::as_bytes)) {
            (&[c], Some(&[last])) if last < c => {
                self.last = Some(key);
                Some(c)
            }
            _ => None,
        }
    }

    /// Whether any key was seen.
    pub(crate) fn any(&self) -> bool {
        self.last.is_some()
    }

    /// Whether every key came after the one before.
    pub(crate) fn sorted(&self) -> bool {
        !self.out_of_order
    }
}

/// Fields kept as a typed header until they are read as entries.
#[derive(Clone)]
struct Typed {
    fields: Arc<dyn TypedFields>,
    /// The fields as entries, made on the first read.
    entries: OnceLock<Box<ExtFields>>,
}

impl Typed {
    fn entries(&self) -> &ExtFields {
        self.entries.get_or_init(|| {
            let mut ext = ExtFields::new();
            self.fields.write_fields(&mut ext);
            Box::new(ext)
        })
    }
}

/// The extension fields of a command: the string map Java calls `extFields`.
///
/// Sorted by key so that encoding is deterministic; receivers must not depend on key order.
/// Inserting a key that is present replaces its value, as a map does.
#[derive(Default)]
pub struct ExtFields {
    arena: String,
    entries: Vec<Entry>,
    /// When set, the fields are this typed header's, and `arena` and `entries` are empty.
    typed: Option<Typed>,
}

/// A clone keeps the room of the original: fields are mostly cloned to be added to (a message
/// sent again, or a template sent many times, gets its id property), and a clone cut to its
/// length would grow at once, copying everything again.
impl Clone for ExtFields {
    fn clone(&self) -> Self {
        let mut arena = String::with_capacity(self.arena.capacity());
        arena.push_str(&self.arena);
        let mut entries = Vec::with_capacity(self.entries.capacity());
        entries.extend_from_slice(&self.entries);
        Self {
            arena,
            entries,
            typed: self.typed.clone(),
        }
    }
}

impl ExtFields {
    /// The fields of a typed header, written straight into a frame when the command is encoded
    /// and turned into entries only when read or changed.
    pub fn typed(fields: Arc<dyn TypedFields>) -> Self {
        Self {
            typed: Some(Typed {
                fields,
                entries: OnceLock::new(),
            }),
            ..Self::default()
        }
    }

    /// The typed header these fields are, unless they were read as entries and changed.
    pub(crate) fn typed_fields(&self) -> Option<&dyn TypedFields> {
        self.typed.as_ref().map(|t| &*t.fields)
    }

    /// The fields as entries.
    fn view(&self) -> &Self {
        match &self.typed {
            Some(t) => t.entries(),
            None => self,
        }
    }

    /// Turns typed fields into entries before a change.
    fn own(&mut self) {
        if let Some(t) = self.typed.take() {
            t.entries();
            if let Some(built) = t.entries.into_inner() {
                *self = *built;
            }
        }
    }

    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set with room for `fields` entries and `text` bytes of keys and values.
    pub fn with_capacity(fields: usize, text: usize) -> Self {
        Self {
            arena: String::with_capacity(text),
            entries: Vec::with_capacity(fields),
            typed: None,
        }
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.view().entries.len()
    }

    /// Whether there is no field.
    pub fn is_empty(&self) -> bool {
        self.view().entries.is_empty()
    }

    fn text(&self, (start, end): Span) -> &str {
        // Spans are only ever made by `push_with` over this arena, at char boundaries.
        self.arena
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    fn key_text(&self, key: Key) -> &str {
        match key {
            Key::Static(k) => k,
            Key::Arena(span) => self.text(span),
        }
    }

    /// A key's bytes: what lookups compare, without the char-boundary checks of
    /// [`ExtFields::key_text`].
    #[inline]
    fn key_bytes(&self, key: Key) -> &[u8] {
        match key {
            Key::Static(k) => k.as_bytes(),
            Key::Arena((start, end)) => self
                .arena
                .as_bytes()
                .get(start as usize..end as usize)
                .unwrap_or_default(),
        }
    }

    /// The span of text appended by `write`.
    fn push_with(&mut self, write: impl FnOnce(&mut String)) -> Span {
        let start = self.arena.len();
        write(&mut self.arena);
        (offset(start), offset(self.arena.len()))
    }

    /// The position of `key`, or where it would go.
    #[inline]
    fn find(&self, key: &[u8]) -> Result<usize, usize> {
        // A header holds a dozen fields: a walk in order beats ordered comparisons, and the
        // first byte settles almost every step without a memcmp call.
        if self.entries.len() > 16 {
            return self.find_many(key);
        }
        for (i, e) in self.entries.iter().enumerate() {
            match key_cmp(self.key_bytes(e.key), key) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Ok(i),
                std::cmp::Ordering::Greater => return Err(i),
            }
        }
        Err(self.entries.len())
    }

    /// [`ExtFields::find`] among many fields, out of the way of the common case.
    #[inline(never)]
    fn find_many(&self, key: &[u8]) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|e| self.key_bytes(e.key).cmp(key))
    }

    fn set(&mut self, key: Key, value: Span) {
        // Callers have made their spans after `own`.
        let name = self.key_bytes(key);
        // Typed headers insert in key order: the common case appends.
        let after_last = self
            .entries
            .last()
            .is_none_or(|last| key_before(self.key_bytes(last.key), name));
        if after_last {
            self.entries.push(Entry { key, value });
            return;
        }
        match self.find(name) {
            Ok(i) => self.entries[i].value = value,
            Err(i) => self.entries.insert(i, Entry { key, value }),
        }
    }

    /// Sets `key` to `value`, replacing any earlier value.
    pub fn insert(&mut self, key: impl Into<Cow<'static, str>>, value: impl AsRef<str>) {
        self.own();
        let key = match key.into() {
            Cow::Borrowed(k) => Key::Static(k),
            Cow::Owned(k) => Key::Arena(self.push_with(|s| s.push_str(&k))),
        };
        let value = self.push_with(|s| s.push_str(value.as_ref()));
        self.set(key, value);
    }

    /// Sets `key` to `value`, both copied into the arena (a key not known at compile time
    /// needs no `String` of its own).
    pub fn insert_str(&mut self, key: &str, value: &str) {
        self.own();
        let key = Key::Arena(self.push_with(|s| s.push_str(key)));
        let value = self.push_with(|s| s.push_str(value));
        self.set(key, value);
    }

    /// Sets `key` to the decimal text of `value`, written straight into the arena.
    pub fn insert_int(&mut self, key: &'static str, value: i64) {
        self.own();
        let mut digits = itoa::Buffer::new();
        let digits = int_digits(value, &mut digits);
        // ASCII digits, one char each: no UTF-8 check needed.
        let value = self.push_with(|s| s.extend(digits.iter().map(|&d| char::from(d))));
        self.set(Key::Static(key), value);
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let s = self.view();
        s.find(key.as_bytes())
            .ok()
            .map(|i| s.text(s.entries[i].value))
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.view().find(key.as_bytes()).is_ok()
    }

    /// The fields as a message's properties string (`name\u{1}value\u{2}` for each, in key
    /// order) when the arena already is exactly that: fields read by
    /// [`ExtFields::from_properties_string`] from a sorted string without repeats or skipped
    /// segments, and not changed since. Writing them out is then one copy; `None` otherwise.
    pub fn as_properties_string(&self) -> Option<&str> {
        if self.typed.is_some() {
            return None;
        }
        let arena = self.arena.as_bytes();
        let mut at = 0u32;
        for e in &self.entries {
            let Key::Arena((key_start, key_end)) = e.key else {
                return None;
            };
            let (value_start, value_end) = e.value;
            let tiled = key_start == at
                && value_start == key_end + 1
                && arena.get(key_end as usize) == Some(&1)
                && arena.get(value_end as usize) == Some(&2);
            if !tiled {
                return None;
            }
            at = value_end + 1;
        }
        (at as usize == arena.len()).then_some(self.arena.as_str())
    }

    /// Whether some key starts with `prefix`: one lookup, as the keys are sorted (the first
    /// key not before `prefix` is the only one to look at).
    pub fn any_key_starts_with(&self, prefix: &str) -> bool {
        let s = self.view();
        let (Ok(i) | Err(i)) = s.find(prefix.as_bytes());
        s.entries
            .get(i)
            .is_some_and(|e| s.key_bytes(e.key).starts_with(prefix.as_bytes()))
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.own();
        let i = self.find(key.as_bytes()).ok()?;
        let e = self.entries.remove(i);
        Some(self.text(e.value).to_owned())
    }

    /// The fields in key order.
    pub fn iter(&self) -> ExtFieldsIter<'_> {
        let s = self.view();
        ExtFieldsIter {
            fields: s,
            entries: s.entries.iter(),
        }
    }

    /// The fields in key order, each key as bytes: for a decoder that matches known keys, which
    /// needs no `&str` of them (and so none of a `&str` slice's checks).
    pub fn iter_key_bytes(&self) -> impl ExactSizeIterator<Item = (&[u8], &str)> + '_ {
        let s = self.view();
        s.entries
            .iter()
            .map(|e| (s.key_bytes(e.key), s.text(e.value)))
    }

    /// Whether no key is empty and no key or value holds byte `a` or `b` (message properties:
    /// their separators). One search of the arena answers the common case; when it finds such a
    /// byte, which may be in text a replaced value left behind, the fields are walked.
    pub fn keys_present_and_free_of(&self, a: u8, b: u8) -> bool {
        let s = self.view();
        let free = |t: &[u8]| !holds_either(t, a, b);
        if free(s.arena.as_bytes()) {
            // Every arena text is clean: left to check are empty keys and keys the program
            // names, which are not in the arena.
            s.entries.iter().all(|e| match e.key {
                Key::Static(k) => !k.is_empty() && free(k.as_bytes()),
                Key::Arena((start, end)) => start != end,
            })
        } else {
            s.entries.iter().all(|e| {
                let key = s.key_bytes(e.key);
                !key.is_empty() && free(key) && free(s.text(e.value).as_bytes())
            })
        }
    }

    /// The keys in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        let s = self.view();
        s.entries.iter().map(|e| s.key_text(e.key))
    }

    /// Total bytes of keys and values: summed from where they are, without reading them.
    pub fn text_len(&self) -> usize {
        let s = self.view();
        let len = |(start, end): Span| end.saturating_sub(start) as usize;
        s.entries
            .iter()
            .map(|e| {
                let key = match e.key {
                    Key::Static(k) => k.len(),
                    Key::Arena(span) => len(span),
                };
                key + len(e.value)
            })
            .sum()
    }

    /// The length of these fields as JSON object members when no character needs an escape:
    /// quotes, colon and comma included.
    pub(crate) fn json_len_unescaped(&self) -> usize {
        if let Some(t) = &self.typed {
            // Quotes, colon and comma of up to 16 fields.
            return t.fields.text_len_hint() + 6 * 16;
        }
        let keys: usize = self
            .entries
            .iter()
            .map(|e| match e.key {
                Key::Static(k) => k.len(),
                Key::Arena((start, end)) => (end - start) as usize,
            })
            .sum();
        // The arena may also hold replaced values: only ever more than needed.
        self.arena.len() + keys + 6 * self.entries.len()
    }

    /// The fields of a message's properties string (`name\u{1}value\u{2}` segments, spec
    /// §6.2), read with one copy of `text` into the arena, with room for `room` more bytes of
    /// fields set later. A segment with an empty name or value, or without `\u{1}`, is
    /// skipped; a value may hold `\u{1}` itself; of repeated names the last wins.
    pub fn from_properties_string(text: &str, room: usize) -> Self {
        Self::from_properties_string_with(text, room, &[])
    }

    /// [`ExtFields::from_properties_string`], with `extra` fields of numbers set as well (the
    /// later value of a key given twice, as [`ExtFields::insert_int`] after the read would):
    /// read into the same arena and sorted with the rest, rather than inserted one by one.
    pub fn from_properties_string_with(
        text: &str,
        room: usize,
        extra: &[(&'static str, i64)],
    ) -> Self {
        const NAME_VALUE: u8 = 1;
        const PAIR: u8 = 2;
        let mut arena = String::with_capacity(text.len() + room);
        arena.push_str(text);
        let bytes = text.as_bytes();
        let mut entries = Vec::with_capacity(8);
        let mut sorted = true;
        let mut prev: &[u8] = &[];
        // The segment being read: where it starts, and its first NAME_VALUE.
        let (mut start, mut split) = (0, None);
        let mut segment_end = |start: usize, split: Option<usize>, end: usize| {
            if let Some(i) = split
                && i > start
                && i + 1 < end
            {
                // Cut at ASCII separators: char boundaries.
                let key = &bytes[start..i];
                sorted &= entries.is_empty() || key_before(prev, key);
                prev = key;
                entries.push(Entry::decoded(
                    span_at(start, i - start),
                    span_at(i + 1, end - i - 1),
                ));
            }
        };
        // One pass over the text for both separators, a word at a time: a message's
        // properties are a few dozen bytes, where a search per separator cost more.
        for_each_of_either(bytes, NAME_VALUE, PAIR, |at, separator| {
            if separator == PAIR {
                segment_end(start, split, at);
                (start, split) = (at + 1, None);
            } else if split.is_none() {
                split = Some(at);
            }
        });
        if start < bytes.len() {
            segment_end(start, split, bytes.len());
        }
        for &(name, value) in extra {
            let key = name.as_bytes();
            sorted &= entries.is_empty() || key_before(prev, key);
            prev = key;
            let mut digits = itoa::Buffer::new();
            let at = arena.len();
            arena.push_str(digits.format(value));
            entries.push(Entry {
                key: Key::Static(name),
                value: span_at(at, arena.len() - at),
            });
        }
        Self::from_decoded(arena, entries, sorted)
    }

    /// Fields decoded elsewhere as spans of `arena` that start and end at char boundaries
    /// (checked by the caller), sorted as by [`ExtFields::finish_decoded`] unless the caller
    /// saw their keys arrive strictly in order (`sorted`).
    pub(crate) fn from_decoded(arena: String, entries: Vec<Entry>, sorted: bool) -> Self {
        let mut ext = Self {
            arena,
            entries,
            typed: None,
        };
        if !sorted {
            ext.finish_decoded();
        }
        ext
    }

    /// Sorts fields given to [`ExtFields::from_decoded`]; of repeated keys the last one wins,
    /// as in a map.
    fn finish_decoded(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        // Our own output (and any sorted sender's) is already in order, without repeats:
        // checked on the raw bytes, without going through `text` for every key.
        let arena = self.arena.as_bytes();
        let raw = |e: &Entry| match e.key {
            Key::Static(k) => k.as_bytes(),
            Key::Arena((start, end)) => arena.get(start as usize..end as usize).unwrap_or_default(),
        };
        let sorted = entries
            .windows(2)
            .all(|w| key_before(raw(&w[0]), raw(&w[1])));
        if !sorted {
            // Stable: repeated keys keep their arrival order, so the last is the one kept.
            // Compared as bytes, the order of `str`, without a char-boundary check per key
            // and mostly without a call to `memcmp` (`key_cmp`).
            entries.sort_by(|x, y| key_cmp(raw(x), raw(y)));
            entries.dedup_by(|later, kept| {
                let same = raw(later) == raw(kept);
                if same {
                    kept.value = later.value;
                }
                same
            });
        }
        self.entries = entries;
    }
}

/// Bytes of a word at a time: a message's properties are a few dozen bytes, where
/// `memchr`'s set-up and a loop over bytes each cost more than eight bytes a step.
const LOW_BITS: u64 = u64::from_ne_bytes([0x01; 8]);

/// The marks (a byte's high bit) of the bytes of `x` that are `a` or `b`: no such byte goes
/// unmarked, but a byte above one may be marked too (a borrow of the subtraction in the
/// classic "has a zero byte" test, here on `x` xor each byte). So a mark says a word holds
/// one, and the lowest mark is one; the others are to be read back.
#[inline]
fn marks_of_either(x: u64, a: u8, b: u8) -> u64 {
    const HIGH_BITS: u64 = u64::from_ne_bytes([0x80; 8]);
    let zero = |v: u64| v.wrapping_sub(LOW_BITS) & !v & HIGH_BITS;
    zero(x ^ (LOW_BITS * u64::from(a))) | zero(x ^ (LOW_BITS * u64::from(b)))
}

/// The word at `w`, eight bytes (read little-endian).
#[inline]
fn word_at(w: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(w);
    u64::from_le_bytes(word)
}

/// Calls `found` with the position and value of every byte of `text` that is `a` or `b`, in
/// order.
fn for_each_of_either(text: &[u8], a: u8, b: u8, mut found: impl FnMut(usize, u8)) {
    let mut words = text.chunks_exact(8);
    let mut base = 0;
    for w in &mut words {
        let mut marks = marks_of_either(word_at(w), a, b);
        while marks != 0 {
            let at = (marks.trailing_zeros() / 8) as usize;
            let c = w[at];
            if c == a || c == b {
                found(base + at, c);
            }
            marks &= marks - 1;
        }
        base += 8;
    }
    for (i, &c) in words.remainder().iter().enumerate() {
        if c == a || c == b {
            found(base + i, c);
        }
    }
}

/// Whether `text` holds byte `a` or byte `b`, with no branch but the loop's.
fn holds_either(text: &[u8], a: u8, b: u8) -> bool {
    let mut words = text.chunks_exact(8);
    let mut found = 0;
    for w in &mut words {
        found |= marks_of_either(word_at(w), a, b);
    }
    found != 0 || words.remainder().iter().any(|&c| c == a || c == b)
}

/// Whether key `a` comes strictly before key `b` (so a repeat is not "before"): the order of
/// `str`, decided by the first byte where it can be (header keys mostly differ there) without
/// a call to `memcmp`; on raw bytes, as decoders check that keys arrive sorted.
pub(crate) fn key_before(a: &[u8], b: &[u8]) -> bool {
    key_cmp(a, b).is_lt()
}

/// The order of [`key_before`]: the first byte decides most comparisons, inline.
#[inline(always)]
fn key_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    match a.first().cmp(&b.first()) {
        std::cmp::Ordering::Equal => key_cmp_rest(a, b),
        unequal => unequal,
    }
}

/// [`key_cmp`] of keys whose first bytes are equal. Keys are short: the common prefix's bytes
/// are compared as two big-endian numbers, its head and its tail (overlapping: once the heads
/// are equal, the tails differ only where the prefixes do), without a loop or a call to
/// `memcmp`.
fn key_cmp_rest(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let n = a.len().min(b.len());
    let prefix = match n {
        0 | 1 => Ordering::Equal,
        2 | 3 => (a[1], a[n - 1]).cmp(&(b[1], b[n - 1])),
        4..=8 => {
            let word = |s: &[u8]| (be32(&s[..4]), be32(&s[n - 4..n]));
            word(a).cmp(&word(b))
        }
        9..=16 => {
            let word = |s: &[u8]| (be64(&s[..8]), be64(&s[n - 8..n]));
            word(a).cmp(&word(b))
        }
        _ => a[..n].cmp(&b[..n]),
    };
    prefix.then(a.len().cmp(&b.len()))
}

/// The first four bytes of `s` as a big-endian number.
#[inline]
fn be32(s: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&s[..4]);
    u32::from_be_bytes(w)
}

/// The first eight bytes of `s` as a big-endian number.
#[inline]
fn be64(s: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[..8]);
    u64::from_be_bytes(w)
}

/// The decimal text of `v` (Java `Long.toString`) as ASCII bytes, written into `buf`.
pub(crate) fn int_digits(v: i64, buf: &mut itoa::Buffer) -> &[u8] {
    buf.format(v).as_bytes()
}

/// The span of `len` bytes appended to `arena`, which is at most `u32::MAX` long (see
/// [`offset`]).
pub(crate) fn span_at(arena: usize, len: usize) -> Span {
    (offset(arena), offset(arena + len))
}

/// Arena offsets: a header is far below 4 GiB (frames are at most 16 MiB by default, and a
/// frame length is an `i32`), so the offset fits; saturate rather than wrap if it ever did not.
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl fmt::Debug for ExtFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PartialEq for ExtFields {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for ExtFields {}

impl std::ops::Index<&str> for ExtFields {
    type Output = str;

    /// # Panics
    /// When `key` is absent, as a map's index does.
    fn index(&self, key: &str) -> &str {
        match self.get(key) {
            Some(v) => v,
            None => panic!("no ext field {key:?}"),
        }
    }
}

impl<K: Into<Cow<'static, str>>, V: AsRef<str>> FromIterator<(K, V)> for ExtFields {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut ext = Self::new();
        ext.extend(iter);
        ext
    }
}

impl<K: Into<Cow<'static, str>>, V: AsRef<str>> Extend<(K, V)> for ExtFields {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

/// The fields of an [`ExtFields`] in key order, as `(key, value)`.
#[derive(Clone, Debug)]
pub struct ExtFieldsIter<'a> {
    fields: &'a ExtFields,
    entries: std::slice::Iter<'a, Entry>,
}

impl<'a> Iterator for ExtFieldsIter<'a> {
    type Item = (&'a str, &'a str);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let e = self.entries.next()?;
        Some((self.fields.key_text(e.key), self.fields.text(e.value)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for ExtFieldsIter<'_> {}

impl<'a> IntoIterator for &'a ExtFields {
    type Item = (&'a str, &'a str);
    type IntoIter = ExtFieldsIter<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one search of the arena never decides alone where it could be wrong: text that a
    /// replaced or removed value left behind does not count, and keys outside the arena (the
    /// program's, empty ones) are checked too.
    #[test]
    fn separator_check_answers_for_the_live_fields_only() {
        let free = |e: &ExtFields| e.keys_present_and_free_of(1, 2);
        let mut e = ExtFields::new();
        e.insert_str("a", "x\u{1}y");
        assert!(!free(&e), "in a value");
        e.insert_str("a", "xy");
        assert!(free(&e), "the old value is left in the arena only");
        e.insert_str("b\u{2}", "z");
        assert!(!free(&e), "in a key");
        assert_eq!(e.remove("b\u{2}").as_deref(), Some("z"));
        assert!(free(&e), "removed");
        e.insert_str("", "z");
        assert!(!free(&e), "an empty key");
        let mut e = ExtFields::new();
        e.insert_str("", "z");
        assert!(!free(&e), "an empty key in a clean arena");
        let mut e = ExtFields::new();
        e.insert("c", "1");
        e.insert_int("d", 2);
        assert!(free(&e), "the program's keys");
        e.insert("", "3");
        assert!(!free(&e), "an empty key the program names");
        let mut e = ExtFields::new();
        e.insert("k\u{1}", "v");
        assert!(!free(&e), "a separator in a key the program names");
        assert!(free(&ExtFields::new()));
    }

    #[test]
    fn behaves_as_a_sorted_map() {
        let mut e = ExtFields::new();
        e.insert("b", "2");
        e.insert(String::from("a"), "1");
        e.insert_int("c", 3);
        e.insert("b", "two");
        assert_eq!(
            e.iter().collect::<Vec<_>>(),
            vec![("a", "1"), ("b", "two"), ("c", "3")]
        );
        assert_eq!(e.get("c"), Some("3"));
        assert_eq!(
            e.text_len(),
            8,
            "a replaced value's old text is not counted"
        );
        assert_eq!(&e["a"], "1");
        assert!(e.contains_key("b") && !e.contains_key("d"));
        assert!(e.any_key_starts_with("") && e.any_key_starts_with("c"));
        assert!(!e.any_key_starts_with("bb") && !e.any_key_starts_with("d"));
        assert_eq!(e.remove("b").as_deref(), Some("two"));
        assert_eq!(e.len(), 2);
        assert_eq!(e.text_len(), 4);
        assert!(
            e.iter_key_bytes()
                .map(|(k, v)| (std::str::from_utf8(k).unwrap(), v))
                .eq(e.iter())
        );
        let same: ExtFields = [("c", "3"), ("a", "1")].into_iter().collect();
        assert_eq!(e, same);
    }

    #[test]
    fn integers_read_as_java_writes_them() {
        for v in [
            0,
            7,
            -7,
            9,
            10,
            -10,
            99,
            100,
            -101,
            1_000,
            1_700_000_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            let mut e = ExtFields::new();
            e.insert_int("v", v);
            assert_eq!(e.get("v"), Some(v.to_string().as_str()));
        }
    }

    proptest::proptest! {
        /// Numbers read with a properties string are what inserting them after the read
        /// gives: sorted in, replacing a value the string had under the same name.
        #[test]
        fn numbers_read_with_properties_are_as_if_inserted_after(
            pairs in proptest::collection::vec(
                (
                    proptest::prop_oneof![
                        "[A-Z]{1,3}",
                        proptest::prelude::Just("MAX_OFFSET".to_owned()),
                        proptest::prelude::Just("MIN_OFFSET".to_owned()),
                        proptest::prelude::Just("ZZ".to_owned()),
                    ],
                    "[a-z0-9]{1,4}",
                ),
                0..8,
            ),
            min in proptest::prelude::any::<i64>(),
            max in proptest::prelude::any::<i64>(),
        ) {
            let text: String = pairs.iter().map(|(k, v)| format!("{k}\u{1}{v}\u{2}")).collect();
            let extra = [("MIN_OFFSET", min), ("MAX_OFFSET", max)];
            let read = ExtFields::from_properties_string_with(&text, 16, &extra);
            let mut expected = ExtFields::from_properties_string(&text, 16);
            for (k, v) in extra {
                expected.insert_int(k, v);
            }
            proptest::prop_assert_eq!(
                read.iter().collect::<Vec<_>>(),
                expected.iter().collect::<Vec<_>>()
            );
        }

        #[test]
        fn any_integer_reads_as_java_writes_it(v in proptest::prelude::any::<i64>()) {
            let mut ext = ExtFields::new();
            ext.insert_int("n", v);
            let expected = v.to_string();
            proptest::prop_assert_eq!(ext.get("n"), Some(expected.as_str()));
        }

        /// The word-wise searches find a byte wherever it is, and nothing else: in a whole
        /// word, in the tail, at either edge, above a match (where a borrow marks bytes too),
        /// next to bytes that differ from it by one bit.
        #[test]
        fn holds_either_finds_what_a_byte_walk_finds(
            text in proptest::collection::vec(
                proptest::prop_oneof![proptest::prelude::Just(0u8), 0u8..4, 0x7Fu8..0x83, proptest::prelude::any::<u8>()],
                0..40,
            ),
            a in 0u8..4,
            b in proptest::prelude::any::<u8>(),
        ) {
            let walked = text.iter().any(|&c| c == a || c == b);
            proptest::prop_assert_eq!(holds_either(&text, a, b), walked);
            let mut found = Vec::new();
            for_each_of_either(&text, a, b, |at, c| found.push((at, c)));
            let expected: Vec<(usize, u8)> = text
                .iter()
                .enumerate()
                .filter(|&(_, &c)| c == a || c == b)
                .map(|(at, &c)| (at, c))
                .collect();
            proptest::prop_assert_eq!(found, expected);
        }

        /// A properties string reads as inserting its well-formed segments one by one does.
        #[test]
        fn a_properties_string_reads_as_its_segments_inserted_in_turn(
            text in "[ab\u{1}\u{2}é]{0,40}",
        ) {
            let mut expected = ExtFields::new();
            for segment in text.split('\u{2}') {
                if let Some((name, value)) = segment.split_once('\u{1}')
                    && !name.is_empty()
                    && !value.is_empty()
                {
                    expected.insert_str(name, value);
                }
            }
            let read = ExtFields::from_properties_string(&text, 8);
            // When the text is taken as it is, it is exactly what writing the fields gives.
            if let Some(whole) = read.as_properties_string() {
                let written: String =
                    read.iter().map(|(k, v)| format!("{k}\u{1}{v}\u{2}")).collect();
                proptest::prop_assert_eq!(whole, written.as_str());
            }
            proptest::prop_assert_eq!(read, expected);
        }

        /// Keys compare as byte strings do, short or long, sharing a prefix or not.
        #[test]
        fn keys_compare_as_byte_strings(
            prefix in "[ab]{0,40}",
            a in "[ab]{0,3}",
            b in "[ab]{0,3}",
        ) {
            let (a, b) = (format!("{prefix}{a}"), format!("{prefix}{b}"));
            proptest::prop_assert_eq!(key_cmp(a.as_bytes(), b.as_bytes()), a.cmp(&b));
        }
    }

    #[test]
    fn a_sorted_properties_string_is_written_back_as_it_came_until_changed() {
        let text = "KEYS\u{1}k1\u{2}TAGS\u{1}a\u{1}b\u{2}UNIQ_KEY\u{1}U1\u{2}";
        let mut read = ExtFields::from_properties_string(text, 8);
        assert_eq!(read.as_properties_string(), Some(text));
        read.insert_str("CLUSTER", "c");
        assert_eq!(read.as_properties_string(), None);
        for text in [
            // Out of order, repeated, a segment skipped, no final separator.
            "TAGS\u{1}a\u{2}KEYS\u{1}k\u{2}",
            "KEYS\u{1}k\u{2}KEYS\u{1}j\u{2}",
            "KEYS\u{1}k\u{2}\u{1}x\u{2}TAGS\u{1}a\u{2}",
            "KEYS\u{1}k",
        ] {
            assert_eq!(
                ExtFields::from_properties_string(text, 0).as_properties_string(),
                None,
                "{text:?}"
            );
        }
        assert_eq!(
            ExtFields::from_properties_string("", 0).as_properties_string(),
            Some("")
        );
    }

    #[test]
    fn decoded_fields_are_sorted_and_the_last_repeat_wins() {
        let mut arena = String::new();
        let mut entries = Vec::new();
        for (k, v) in [("z", "1"), ("k", "2"), ("z", "3")] {
            let key = span_at(arena.len(), k.len());
            arena.push_str(k);
            let value = span_at(arena.len(), v.len());
            arena.push_str(v);
            entries.push(Entry::decoded(key, value));
        }
        let e = ExtFields::from_decoded(arena, entries, false);
        assert_eq!(e.iter().collect::<Vec<_>>(), vec![("k", "2"), ("z", "3")]);
    }
}

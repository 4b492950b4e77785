//! A writer of header bytes into room made up front, shared by the JSON and ROCKETMQ header
//! encoders: what does not fit is not written, and the writer counts on, so that the caller
//! learns the exact length and writes once more into that much room.

use bytes::BytesMut;

/// Writes with `write` into `room` bytes made at the end of `dst`; when the text needs more,
/// `write` runs once more into exactly that much. `dst` ends with the text. Returns where the
/// text starts in `dst` and what the pass that fit returned.
pub(super) fn write_sized<T>(
    dst: &mut BytesMut,
    mut room: usize,
    mut write: impl FnMut(&mut Out<'_>) -> T,
) -> (usize, T) {
    let start = dst.len();
    loop {
        dst.resize(start + room, 0);
        let mut out = Out {
            buf: &mut dst[start..],
            at: 0,
        };
        let result = write(&mut out);
        let written = out.at;
        if written <= room {
            dst.truncate(start + written);
            return (start, result);
        }
        room = written;
    }
}

/// A writer into a byte slice that counts past its end: what does not fit is not written, and
/// `at` ends as the length the whole text needs.
pub(super) struct Out<'a> {
    pub(super) buf: &'a mut [u8],
    pub(super) at: usize,
}

impl Out<'_> {
    #[inline]
    pub(super) fn byte(&mut self, b: u8) {
        if let Some(d) = self.buf.get_mut(self.at) {
            *d = b;
        }
        self.at += 1;
    }

    #[inline]
    pub(super) fn put(&mut self, s: &[u8]) {
        let end = self.at + s.len();
        if let Some(d) = self.buf.get_mut(self.at..end) {
            copy_short(d, s);
        }
        self.at = end;
    }

    /// `N` bytes in one fixed-size copy.
    #[inline]
    pub(super) fn array<const N: usize>(&mut self, s: [u8; N]) {
        if let Some(d) = self.buf.get_mut(self.at..self.at + N) {
            d.copy_from_slice(&s);
        }
        self.at += N;
    }

    #[inline]
    pub(super) fn int(&mut self, v: i64) {
        // A header's flag and version, and many a code, opaque and count, are one digit.
        if let Ok(d @ 0..=9) = u8::try_from(v) {
            self.byte(b'0' + d);
            return;
        }
        let mut digits = itoa::Buffer::new();
        self.put(super::ext::int_digits(v, &mut digits));
    }
}

/// `dst.copy_from_slice(src)` (equal lengths) without a call to `memcpy` for the short pieces a
/// header is made of: two overlapping fixed-size copies cover any length from n to 2n.
#[inline]
pub(super) fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    // Callers give equal lengths; this lets the compiler drop the bounds checks below.
    if n != dst.len() {
        return;
    }
    match n {
        0 => {}
        1..=3 => {
            dst[0] = src[0];
            dst[n / 2] = src[n / 2];
            dst[n - 1] = src[n - 1];
        }
        4..=7 => {
            dst[..4].copy_from_slice(&src[..4]);
            dst[n - 4..].copy_from_slice(&src[n - 4..]);
        }
        8..=16 => {
            dst[..8].copy_from_slice(&src[..8]);
            dst[n - 8..].copy_from_slice(&src[n - 8..]);
        }
        17..=32 => {
            dst[..16].copy_from_slice(&src[..16]);
            dst[n - 16..].copy_from_slice(&src[n - 16..]);
        }
        _ => dst.copy_from_slice(src),
    }
}

//! Message ids: the broker's offset message id (spec §6.6) and the client unique id (§6.7).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU16, Ordering};
use std::time::{Duration, SystemTime};

use crate::wire_time;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// A message id could not be parsed.
#[derive(Clone, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Wrong length for an IPv4 or IPv6 id.
    #[error("message id {0:?} has the wrong length")]
    Length(String),
    /// Not hexadecimal.
    #[error("message id {0:?} is not hexadecimal")]
    NotHex(String),
}

/// Upper-case hex, two digits a byte.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Appends `bytes` to `out` as upper-case hex, two digits a byte.
fn push_hex(out: &mut String, bytes: &[u8]) {
    // A broker writes an offset id (16 or 28 bytes) for every message it stores: converted
    // on the stack in chunks, each appended at once, instead of a push per digit.
    let mut digits = [0u8; 64];
    for chunk in bytes.chunks(digits.len() / 2) {
        let text = &mut digits[..chunk.len() * 2];
        hex_into(text, chunk);
        // HEX holds ASCII digits only: always UTF-8.
        out.push_str(std::str::from_utf8(text).unwrap_or_default());
    }
}

/// `bytes` as upper-case hex digits into `out`, two a byte (`out` has room for them): eight
/// bytes a step in machine words, the rest by table.
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    let (mut out, mut bytes) = (out, bytes);
    while let Some((eight, rest)) = bytes.split_first_chunk::<8>() {
        let Some((digits, more)) = std::mem::take(&mut out).split_first_chunk_mut::<16>() else {
            return;
        };
        let v = u64::from_be_bytes(*eight);
        let (high, low) = digits.split_at_mut(8);
        high.copy_from_slice(&hex8((v >> 32) as u32).to_be_bytes());
        low.copy_from_slice(&hex8(v as u32).to_be_bytes());
        (out, bytes) = (more, rest);
    }
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xF)];
    }
}

/// The eight hex digits of `x`, upper case, most significant in the highest byte.
fn hex8(x: u32) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Spread the nibbles out, one to a byte: 0xAABBCCDD -> 0x0A0A0B0B0C0C0D0D, by halves.
    let x = u64::from(x);
    let x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    let x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    let x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    // A nibble of 10 or more carries into bit 4 when 6 is added (no byte overflows): its
    // digit is a letter, 7 past where the digits' run would put it.
    let letters = ((x + 6 * ONES) >> 4) & ONES;
    x + u64::from(b'0') * ONES + 7 * letters
}

fn from_hex(s: &str) -> Result<Vec<u8>, IdError> {
    if !s.len().is_multiple_of(2) {
        return Err(IdError::Length(s.to_owned()));
    }
    hex_bytes(s).ok_or_else(|| IdError::NotHex(s.to_owned()))
}

/// The bytes of hex text, digits of either case and nothing else (no sign, no space); `None`
/// for any other text.
pub(crate) fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let text = text.as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks_exact(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// `hex(storeIp ++ storePort(i32) ++ commitLogOffset(i64))`: 32 uppercase hex characters for
/// IPv4, 56 for IPv6.
pub fn encode_offset_msg_id(store_host: SocketAddr, commit_log_offset: i64) -> String {
    let mut id = String::with_capacity(if store_host.is_ipv4() { 32 } else { 56 });
    push_offset_msg_id(&mut id, store_host, commit_log_offset);
    id
}

/// [`encode_offset_msg_id`] appended to `out`: a batch's ids are written into one string
/// without one of their own each.
pub fn push_offset_msg_id(out: &mut String, store_host: SocketAddr, commit_log_offset: i64) {
    // Address, port and offset: at most 16 + 4 + 8 bytes, on the stack.
    let mut b = [0u8; 28];
    let ip = match store_host.ip() {
        IpAddr::V4(ip) => {
            b[..4].copy_from_slice(&ip.octets());
            4
        }
        IpAddr::V6(ip) => {
            b[..16].copy_from_slice(&ip.octets());
            16
        }
    };
    b[ip..ip + 4].copy_from_slice(&i32::from(store_host.port()).to_be_bytes());
    b[ip + 4..ip + 12].copy_from_slice(&commit_log_offset.to_be_bytes());
    push_hex(out, &b[..ip + 12]);
}

/// Parses an offset message id into the broker address and commit-log offset.
///
/// # Errors
/// [`IdError`] when it is not 32 or 56 hex characters.
pub fn decode_offset_msg_id(id: &str) -> Result<(SocketAddr, i64), IdError> {
    let b = from_hex(id)?;
    let (ip, rest): (IpAddr, &[u8]) = match b.len() {
        16 => (IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])), &b[4..]),
        28 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[..16]);
            (IpAddr::V6(Ipv6Addr::from(o)), &b[16..])
        }
        _ => return Err(IdError::Length(id.to_owned())),
    };
    let port = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let mut off = [0u8; 8];
    off.copy_from_slice(&rest[4..12]);
    Ok((
        SocketAddr::new(ip, u16::try_from(port).unwrap_or(0)),
        i64::from_be_bytes(off),
    ))
}

/// The parts of a client unique id.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct UniqueIdParts {
    /// The 4 or 16 address bytes (informational only).
    pub ip: Vec<u8>,
    /// Low 16 bits of the process id.
    pub pid: u16,
    /// Per-process random value (Java: class-loader hash).
    pub random: i32,
    /// Milliseconds since the start of the month the id was made in.
    ///
    /// An unsigned 32-bit value: a 31-day month holds 2 678 400 000 ms, more than `i32::MAX`.
    /// Java writes the same bits through an `(int)` cast, so from the 25th day on Java reads it
    /// back as a negative number; the bits on the wire agree.
    pub millis_in_month: u32,
    /// Per-process counter.
    pub counter: u16,
}

impl UniqueIdParts {
    /// The time since the start of the month the id was made in.
    pub fn since_month_start(&self) -> Duration {
        Duration::from_millis(u64::from(self.millis_in_month))
    }
}

/// Parses a client unique id (32 hex characters for IPv4, 56 for IPv6).
///
/// # Errors
/// [`IdError`] when the length or characters are wrong.
pub fn parse_unique_id(id: &str) -> Result<UniqueIdParts, IdError> {
    let b = from_hex(id)?;
    let ip_len = match b.len() {
        16 => 4,
        28 => 16,
        _ => return Err(IdError::Length(id.to_owned())),
    };
    let r = &b[ip_len..];
    Ok(UniqueIdParts {
        ip: b[..ip_len].to_vec(),
        pid: u16::from_be_bytes([r[0], r[1]]),
        random: i32::from_be_bytes([r[2], r[3], r[4], r[5]]),
        millis_in_month: u32::from_be_bytes([r[6], r[7], r[8], r[9]]),
        counter: u16::from_be_bytes([r[10], r[11]]),
    })
}

/// Makes client unique ids: `ip(4|16) pid(2) random(4) msSinceMonthStart(u32) counter(2)`.
///
/// The month is taken in UTC (Java uses the local zone; peers treat the field as opaque).
#[derive(Debug)]
pub struct UniqueIdGenerator {
    prefix: String,
    counter: AtomicU16,
    /// The month of the last id: its start in epoch milliseconds and its length in days, as
    /// `start << 6 | days`, read and replaced whole without a lock (0: none yet).
    month: AtomicI64,
}

impl UniqueIdGenerator {
    /// A generator whose ids carry `ip` (the configured client address). Without one, the low
    /// 4 bytes of the current epoch milliseconds stand in, as Java does when it finds no
    /// address; nothing is probed.
    pub fn new(ip: Option<IpAddr>) -> Self {
        let mut prefix_bytes = match ip {
            Some(IpAddr::V4(v4)) => v4.octets().to_vec(),
            Some(IpAddr::V6(v6)) => v6.octets().to_vec(),
            None => wire_time::now_millis().to_be_bytes()[4..].to_vec(),
        };
        prefix_bytes.extend_from_slice(&(std::process::id() & 0xFFFF).to_be_bytes()[2..]);
        prefix_bytes.extend_from_slice(&fastrand::i32(..).to_be_bytes());
        Self {
            prefix: to_hex(&prefix_bytes),
            counter: AtomicU16::new(fastrand::u16(..)),
            month: AtomicI64::new(0),
        }
    }

    /// A fresh id.
    pub fn next_id(&self) -> String {
        self.next_id_at(SystemTime::now())
    }

    /// A fresh id made at `now` (the clock is a parameter so that month edges can be tested).
    pub fn next_id_at(&self, now: SystemTime) -> String {
        self.next_id_with(now, str::to_owned)
    }

    /// A fresh id made at `now`, handed to `use_id` from a buffer on the stack: for a caller
    /// that copies it anyway (into a message's properties), no allocation of its own.
    pub fn next_id_with<R>(&self, now: SystemTime, use_id: impl FnOnce(&str) -> R) -> R {
        self.next_id_on(self.clock(now), use_id)
    }

    /// The time part of ids made at `now`, for [`UniqueIdGenerator::next_id_on`]: the ids of
    /// one batch share it, and the clock is read and the month worked out once for them all.
    pub fn clock(&self, now: SystemTime) -> IdClock {
        let now = wire_time::to_millis(now);
        const DAY: i64 = 86_400_000;
        let packed = self.month.load(Ordering::Relaxed);
        let (mut start, days) = (packed >> 6, packed & 63);
        if now < start || now >= start + days * DAY {
            let (s, end) = month_bounds(now);
            start = s;
            // Racing generators store the same month, or each its own now: either is a month
            // some id was made in, and the next id checks its bounds again.
            self.month
                .store((s << 6) | ((end - s) / DAY), Ordering::Relaxed);
        }
        // At most 31 days (2 678 399 999 ms) after the month's start: always fits 32 bits.
        IdClock {
            since_month_start: u32::try_from(now - start).unwrap_or(u32::MAX),
        }
    }

    /// [`UniqueIdGenerator::next_id_with`] at the time of `clock`: ids made on one clock
    /// differ in their counter.
    pub fn next_id_on<R>(&self, clock: IdClock, use_id: impl FnOnce(&str) -> R) -> R {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        // Time and counter: 6 bytes, 12 hex digits, most significant first.
        let mut tail = [0u8; 6];
        tail[..4].copy_from_slice(&clock.since_month_start.to_be_bytes());
        tail[4..].copy_from_slice(&counter.to_be_bytes());
        // The prefix is 20 digits for an IPv4 address, 44 for IPv6: with the tail's 12, at
        // most 56, so the bound below never cuts it (it only keeps the copy in range).
        let mut text = [0u8; 64];
        let prefix = self.prefix.as_bytes();
        let n = prefix.len().min(text.len() - 2 * tail.len());
        text[..n].copy_from_slice(&prefix[..n]);
        hex_into(&mut text[n..n + 2 * tail.len()], &tail);
        // Hex digits only: always UTF-8.
        use_id(std::str::from_utf8(&text[..n + 2 * tail.len()]).unwrap_or_default())
    }
}

/// The time part of client unique ids made at one instant ([`UniqueIdGenerator::clock`]).
#[derive(Clone, Copy, Debug)]
pub struct IdClock {
    /// Milliseconds since the start of the month (UTC).
    since_month_start: u32,
}

/// Start and end (ms since the epoch, UTC) of the month containing `ms`.
fn month_bounds(ms: i64) -> (i64, i64) {
    const DAY: i64 = 86_400_000;
    let days = ms.div_euclid(DAY);
    let (y, m, _) = civil_from_days(days);
    let start = days_from_civil(y, m, 1) * DAY;
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (start, days_from_civil(ny, nm, 1) * DAY)
}

// Howard Hinnant's proleptic Gregorian calendar conversions.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use std::time::UNIX_EPOCH;

    use super::*;

    #[test]
    fn offset_id_is_32_uppercase_hex_for_ipv4() {
        let id = encode_offset_msg_id("127.0.0.1:10911".parse().unwrap(), 0x1234);
        assert_eq!(id, "7F00000100002A9F0000000000001234");
        assert_eq!(
            decode_offset_msg_id(&id).unwrap(),
            ("127.0.0.1:10911".parse().unwrap(), 0x1234)
        );
        let v6 = encode_offset_msg_id("[::1]:10911".parse().unwrap(), 7);
        assert_eq!(v6.len(), 56);
        assert!(decode_offset_msg_id("ABC").is_err());
        assert!(decode_offset_msg_id("ZZ00000100002A9F0000000000001234").is_err());
    }

    /// A batch answer's ids are appended to one string: each reads back as made alone.
    #[test]
    fn offset_ids_appended_to_a_list_read_back_one_by_one() {
        let hosts: [SocketAddr; 2] = [
            "10.1.2.3:10911".parse().unwrap(),
            "[2001:db8::7]:30911".parse().unwrap(),
        ];
        let mut list = String::new();
        for (i, host) in hosts.iter().enumerate() {
            if i > 0 {
                list.push(',');
            }
            push_offset_msg_id(&mut list, *host, 1 << 40 | i as i64);
        }
        let ids: Vec<&str> = list.split(',').collect();
        assert_eq!(ids.len(), 2);
        for (i, (id, host)) in ids.iter().zip(hosts).enumerate() {
            assert_eq!(*id, encode_offset_msg_id(host, 1 << 40 | i as i64));
            assert_eq!(
                decode_offset_msg_id(id).unwrap(),
                (host, 1 << 40 | i as i64)
            );
        }
    }

    /// 2026-01-31T23:59:59.999Z, the last millisecond of a 31-day month.
    const JAN_LAST_MS: u64 = 1_769_903_999_999;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn unique_ids_share_a_prefix_and_differ() {
        let g = UniqueIdGenerator::new(Some("10.0.0.5".parse().unwrap()));
        let a = g.next_id_at(at(JAN_LAST_MS - 86_400_000));
        let b = g.next_id_at(at(JAN_LAST_MS - 86_400_000));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(a[..20], b[..20]);
        let p = parse_unique_id(&a).unwrap();
        assert_eq!(p.ip, vec![10, 0, 0, 5]);
        assert_eq!(p.pid, (std::process::id() & 0xFFFF) as u16);
        assert_eq!(
            parse_unique_id(&b).unwrap().counter,
            p.counter.wrapping_add(1)
        );
        assert_eq!(
            p.since_month_start(),
            Duration::from_millis(30 * 86_400_000 - 1)
        );
    }

    /// Ids made on one clock (a batch's) are those made one by one at its instant: the same
    /// prefix and time, the counter one up each.
    #[test]
    fn ids_on_one_clock_are_those_made_at_its_instant() {
        let g = UniqueIdGenerator::new(Some("10.0.0.5".parse().unwrap()));
        let now = at(JAN_LAST_MS - 5);
        let clock = g.clock(now);
        let batch: Vec<String> = (0..3).map(|_| g.next_id_on(clock, str::to_owned)).collect();
        let alone = g.next_id_at(now);
        let parts: Vec<UniqueIdParts> = batch
            .iter()
            .chain([&alone])
            .map(|id| parse_unique_id(id).unwrap())
            .collect();
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.millis_in_month, 2_678_399_994, "id {i}");
            assert_eq!(p.counter, parts[0].counter.wrapping_add(i as u16), "id {i}");
            let origin = |p: &UniqueIdParts| (p.ip.clone(), p.pid, p.random);
            assert_eq!(origin(p), origin(&parts[0]), "id {i}");
        }
    }

    #[test]
    fn an_ipv6_client_id_carries_the_whole_address() {
        let g = UniqueIdGenerator::new(Some("fd00::1:2".parse().unwrap()));
        let id = g.next_id_at(at(JAN_LAST_MS));
        assert_eq!(id.len(), 56);
        let p = parse_unique_id(&id).unwrap();
        assert_eq!(
            p.ip,
            "fd00::1:2".parse::<Ipv6Addr>().unwrap().octets().to_vec()
        );
        assert_eq!(p.millis_in_month, 2_678_399_999);
    }

    #[test]
    fn the_month_field_holds_the_last_millisecond_of_a_31_day_month() {
        let g = UniqueIdGenerator::new(None);
        let last = parse_unique_id(&g.next_id_at(at(JAN_LAST_MS))).unwrap();
        // 31 days less 1 ms: past i32::MAX, read back whole.
        assert_eq!(last.millis_in_month, 2_678_399_999);
        assert!(last.millis_in_month > i32::MAX as u32);
        assert_eq!(
            last.since_month_start(),
            Duration::from_millis(31 * 86_400_000 - 1)
        );
        // Java's (int) cast writes the same four bytes.
        assert_eq!(
            &g.next_id_at(at(JAN_LAST_MS))[20..28],
            format!("{:08X}", (2_678_399_999u32 as i32) as u32)
        );
    }

    #[test]
    fn the_month_field_restarts_across_a_month_boundary_and_back() {
        let g = UniqueIdGenerator::new(Some("127.0.0.1".parse().unwrap()));
        let field = |ms| {
            parse_unique_id(&g.next_id_at(at(ms)))
                .unwrap()
                .millis_in_month
        };
        assert_eq!(field(JAN_LAST_MS), 2_678_399_999);
        // 2026-02-01T00:00:00.000Z and .001
        assert_eq!(field(JAN_LAST_MS + 1), 0);
        assert_eq!(field(JAN_LAST_MS + 2), 1);
        // A clock stepped back into January recomputes January's start.
        assert_eq!(field(JAN_LAST_MS - 999), 2_678_399_000);
        // The end of a 28-day February.
        assert_eq!(field(JAN_LAST_MS + 28 * 86_400_000), 28 * 86_400_000 - 1);
    }

    #[test]
    fn month_bounds_are_calendar_months() {
        // 2024-02-15T12:00:00Z: the leap February.
        let (s, e) = month_bounds(1_707_998_400_000);
        assert_eq!(s, 1_706_745_600_000); // 2024-02-01
        assert_eq!(e, 1_709_251_200_000); // 2024-03-01
    }

    proptest! {
        #[test]
        fn offset_ids_round_trip(ip in any::<[u8; 4]>(), port in any::<u16>(), off in any::<i64>()) {
            let host = SocketAddr::from((ip, port));
            prop_assert_eq!(decode_offset_msg_id(&encode_offset_msg_id(host, off)).unwrap(), (host, off));
        }

        /// Upper-case hex of any bytes, short (on the stack) or long.
        #[test]
        fn hex_is_upper_case_two_digits_a_byte(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let expected: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
            prop_assert_eq!(to_hex(&bytes), expected);
        }

        #[test]
        fn calendar_round_trips(days in -100_000i64..100_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}

//! Times as the wire carries them: signed milliseconds since the Unix epoch (Java's
//! `System.currentTimeMillis()`). Everything above layer 2 works in [`SystemTime`]; these are the
//! only conversions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` as wire milliseconds: negative before the epoch, saturating at the `i64` range.
pub fn to_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// Wire milliseconds as a time (negative values lie before the epoch).
pub fn from_millis(ms: i64) -> SystemTime {
    let magnitude = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// A duration as wire milliseconds, saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Wire milliseconds as a duration; a negative count is none.
pub fn millis_duration(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The current time as wire milliseconds.
pub fn now_millis() -> i64 {
    to_millis(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(to_millis(UNIX_EPOCH), 0);
        assert_eq!(
            to_millis(UNIX_EPOCH + Duration::from_millis(1_707_998_400_123)),
            1_707_998_400_123
        );
        assert_eq!(to_millis(UNIX_EPOCH - Duration::from_millis(5)), -5);
        // Truncates toward the epoch, as Java does for sub-millisecond parts.
        assert_eq!(to_millis(UNIX_EPOCH + Duration::from_micros(1_999)), 1);
    }

    proptest! {
        #[test]
        fn round_trips(ms in -10_000_000_000_000i64..10_000_000_000_000) {
            prop_assert_eq!(to_millis(from_millis(ms)), ms);
        }
    }
}

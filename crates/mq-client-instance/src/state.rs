//! The service-state machine producers, consumers and instances share (Java `ServiceState`).

use std::fmt;

use std::sync::atomic::{AtomicU8, Ordering};

/// Lifecycle state.
#[derive(Clone, Copy, Debug, Eq, Hash, PartialEq)]
#[non_exhaustive]
pub enum ServiceState {
    /// Built, not started. Java: `CREATE_JUST`.
    Created,
    /// Started. Java: `RUNNING`.
    Running,
    /// Shut down. Java: `SHUTDOWN_ALREADY`.
    ShutdownAlready,
    /// A start failed part way. Java: `START_FAILED`.
    StartFailed,
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "CREATE_JUST",
            Self::Running => "RUNNING",
            Self::ShutdownAlready => "SHUTDOWN_ALREADY",
            Self::StartFailed => "START_FAILED",
        })
    }
}

impl ServiceState {
    const ALL: [Self; 4] = [
        Self::Created,
        Self::Running,
        Self::ShutdownAlready,
        Self::StartFailed,
    ];

    fn from_u8(v: u8) -> Self {
        // Only `as u8` of a state is ever stored.
        Self::ALL[usize::from(v) % Self::ALL.len()]
    }
}

/// A state with checked transitions: one atomic, since every send and pull reads it.
#[derive(Debug)]
pub struct StateMachine(AtomicU8);

impl Default for StateMachine {
    fn default() -> Self {
        Self(AtomicU8::new(ServiceState::Created as u8))
    }
}

/// A transition was attempted from the wrong state.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[error("service state not OK: expected {expected}, found {found}")]
pub struct StateError {
    /// The state the transition needs.
    pub expected: ServiceState,
    /// The state it found.
    pub found: ServiceState,
}

impl StateMachine {
    /// The current state.
    pub fn get(&self) -> ServiceState {
        ServiceState::from_u8(self.0.load(Ordering::Acquire))
    }

    /// Moves from `from` to `to`.
    ///
    /// # Errors
    /// [`StateError`] when the current state is not `from`.
    pub fn transition(&self, from: ServiceState, to: ServiceState) -> Result<(), StateError> {
        self.0
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|found| StateError {
                expected: from,
                found: ServiceState::from_u8(found),
            })
    }

    /// Sets the state unconditionally (shutdown).
    pub fn force(&self, to: ServiceState) {
        self.0.store(to as u8, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_checked() {
        let m = StateMachine::default();
        assert_eq!(m.get(), ServiceState::Created);
        m.transition(ServiceState::Created, ServiceState::StartFailed)
            .unwrap();
        let e = m
            .transition(ServiceState::Created, ServiceState::Running)
            .unwrap_err();
        assert_eq!(e.found, ServiceState::StartFailed);
        assert_eq!(ServiceState::StartFailed.to_string(), "START_FAILED");
        m.force(ServiceState::ShutdownAlready);
        assert_eq!(m.get(), ServiceState::ShutdownAlready);
    }

    #[test]
    fn every_state_is_stored_as_itself() {
        for s in ServiceState::ALL {
            assert_eq!(ServiceState::from_u8(s as u8), s);
        }
    }
}

//! The service-state machine producers, consumers and instances share (Java `ServiceState`).

use std::fmt;

use parking_lot::Mutex;

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

/// A state with checked transitions.
#[derive(Debug)]
pub struct StateMachine(Mutex<ServiceState>);

impl Default for StateMachine {
    fn default() -> Self {
        Self(Mutex::new(ServiceState::Created))
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
        *self.0.lock()
    }

    /// Moves from `from` to `to`.
    ///
    /// # Errors
    /// [`StateError`] when the current state is not `from`.
    pub fn transition(&self, from: ServiceState, to: ServiceState) -> Result<(), StateError> {
        let mut s = self.0.lock();
        if *s == from {
            *s = to;
            Ok(())
        } else {
            Err(StateError {
                expected: from,
                found: *s,
            })
        }
    }

    /// Sets the state unconditionally (shutdown).
    pub fn force(&self, to: ServiceState) {
        *self.0.lock() = to;
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
    }
}

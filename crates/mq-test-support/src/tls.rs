//! Certificates for TLS tests, made fresh by each test (rcgen): no key is ever committed.

/// A self-signed certificate and its key, in PEM.
#[derive(Clone, Debug)]
pub struct TestCert {
    /// The certificate: also the root a client trusts to accept it.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl TestCert {
    /// A new certificate for `127.0.0.1` and `localhost`, signed by its own key.
    ///
    /// # Panics
    /// If rcgen cannot make one (it always can for these names).
    pub fn loopback() -> Self {
        Self::for_names(&["127.0.0.1", "localhost"])
    }

    /// A new self-signed certificate for `names` (IP addresses or DNS names).
    ///
    /// # Panics
    /// If rcgen refuses a name.
    pub fn for_names(names: &[&str]) -> Self {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        // Test support: a refused name is a bug in the test.
        #[allow(clippy::expect_used)]
        let certified =
            rcgen::generate_simple_self_signed(names).expect("rcgen makes a certificate");
        Self {
            cert_pem: certified.cert.pem(),
            key_pem: certified.key_pair.serialize_pem(),
        }
    }

    /// Writes `cert.pem` and `key.pem` into `dir`; returns their paths.
    ///
    /// # Panics
    /// If the files cannot be written.
    pub fn write_to(&self, dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        // Test support: an unwritable temp dir is a broken machine.
        #[allow(clippy::expect_used)]
        {
            std::fs::write(&cert, &self.cert_pem).expect("write cert.pem");
            std::fs::write(&key, &self.key_pem).expect("write key.pem");
        }
        (cert, key)
    }
}

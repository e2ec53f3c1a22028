package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
)

// Config builds the TLS configuration to dial the MySQL server at addr
// (host:port), or returns nil when Mode is disabled. For preferred and
// required the server is not verified (the caller falls back to plain text
// for preferred when the server has no TLS); verify-ca checks the chain
// against CAFile but not the name; verify-identity checks both.
// Errors start with the offending key ("ca_file ...").
func (t *MySQLTLS) Config(addr string) (*tls.Config, error) {
	if t.Mode == TLSDisabled || t.Mode == "" {
		return nil, nil
	}
	cfg, err := baseTLS(t.CAFile, t.CertFile, t.KeyFile)
	if err != nil {
		return nil, err
	}
	cfg.ServerName = t.ServerName
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	switch t.Mode {
	case TLSPreferred, TLSRequired:
		cfg.InsecureSkipVerify = true
	case TLSVerifyCA:
		roots := cfg.RootCAs
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyChain(cs, roots)
		}
	}
	return cfg, nil
}

// Config builds the TLS configuration for Redis or Kafka, or returns nil
// when TLS is not enabled. Errors start with the offending key.
func (t *ClientTLS) Config() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	cfg, err := baseTLS(t.CAFile, t.CertFile, t.KeyFile)
	if err != nil {
		return nil, err
	}
	cfg.ServerName = t.ServerName
	cfg.InsecureSkipVerify = t.InsecureSkipVerify
	return cfg, nil
}

func baseTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w; fix the path", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate; point it at a PEM CA bundle", caFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: loading the client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case certFile != "":
		return nil, fmt.Errorf("cert_file is set without key_file; set both or neither")
	case keyFile != "":
		return nil, fmt.Errorf("key_file is set without cert_file; set both or neither")
	}
	return cfg, nil
}

// verifyChain checks the peer's chain against roots, ignoring its name.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("verifying the server certificate: none presented")
	}
	opts := x509.VerifyOptions{Roots: roots, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := cs.PeerCertificates[0].Verify(opts); err != nil {
		return fmt.Errorf("verifying the server certificate against mysql.tls.ca_file: %w", err)
	}
	return nil
}

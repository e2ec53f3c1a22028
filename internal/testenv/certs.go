package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Certs are a throwaway certificate authority and certificates it signed,
// written as PEM files: a server certificate for 127.0.0.1, ::1 and localhost,
// and a client certificate (CN ClientCN) for mutual TLS. Keys are ECDSA P-256.
type Certs struct {
	Dir        string
	CAFile     string // the CA certificate
	ServerCert string // server certificate, signed by the CA
	ServerKey  string
	ClientCert string // client certificate, signed by the CA
	ClientKey  string

	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

// ClientCN is the common name of the client certificate.
const ClientCN = "binlogsync"

// NewCerts generates a CA, a server and a client certificate in a temporary
// directory of the test.
func NewCerts(t testing.TB) *Certs {
	t.Helper()
	c, err := GenerateCerts(t.TempDir())
	if err != nil {
		t.Fatalf("generating test certificates: %v", err)
	}
	return c
}

// GenerateCerts writes ca.pem, server.pem, server-key.pem, client.pem and
// client-key.pem in dir.
func GenerateCerts(dir string) (*Certs, error) {
	c := &Certs{
		Dir:        dir,
		CAFile:     filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server-key.pem"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client-key.pem"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "binlogsync test CA", Organization: []string{"binlogsync tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("signing the CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parsing the CA certificate: %w", err)
	}
	if err := writePEM(c.CAFile, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	c.pool = x509.NewCertPool()
	c.pool.AddCert(caCert)

	leaf := func(tmpl *x509.Certificate, certFile, keyFile string) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("generating the key of %s: %w", certFile, err)
		}
		tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(7*24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := sign(tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("signing %s: %w", certFile, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("encoding the key of %s: %w", certFile, err)
		}
		if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
			return tls.Certificate{}, err
		}
		if err := writePEM(keyFile, "PRIVATE KEY", keyDER); err != nil {
			return tls.Certificate{}, err
		}
		return tls.LoadX509KeyPair(certFile, keyFile)
	}
	c.server, err = leaf(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "localhost"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, c.ServerCert, c.ServerKey)
	if err != nil {
		return nil, err
	}
	c.client, err = leaf(&x509.Certificate{
		Subject:     pkix.Name{CommonName: ClientCN},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, c.ClientCert, c.ClientKey)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, priv *ecdsa.PrivateKey) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	return x509.CreateCertificate(rand.Reader, tmpl, parent, pub, priv)
}

func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// ServerTLS is a server configuration presenting the server certificate;
// with requireClientCert, clients must present a certificate the CA signed.
func (c *Certs) ServerTLS(requireClientCert bool) *tls.Config {
	cfg := &tls.Config{Certificates: []tls.Certificate{c.server}, MinVersion: tls.VersionTLS12}
	if requireClientCert {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = c.pool
	}
	return cfg
}

// ClientTLS is a client configuration that verifies the server against the
// CA and presents the client certificate.
func (c *Certs) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: c.pool, Certificates: []tls.Certificate{c.client}, MinVersion: tls.VersionTLS12}
}

// MariaDBArgs are the mariadbd options serving TLS with the server
// certificate (clients may then be required to present a certificate with
// REQUIRE X509).
func (c *Certs) MariaDBArgs() []string {
	return []string{"--ssl-ca=" + c.CAFile, "--ssl-cert=" + c.ServerCert, "--ssl-key=" + c.ServerKey}
}

// NewTLSRedis starts a redis-server of the test's own that listens only
// with TLS (no plain-text port), presenting the server certificate and
// requiring clients to present a certificate the CA signed. Connect with
// c.ClientTLS().
func NewTLSRedis(t testing.TB, c *Certs, extra ...string) *Redis {
	t.Helper()
	bin, err := lookBin("redis-server")
	if err != nil {
		Require(t, "starting Redis: %v", err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// Start puts "--port <Port>" first; these later options override it, so
	// the TLS port is Port and Start's readiness wait (a TCP connect) holds.
	args := []string{"--port", "0", "--tls-port", strconv.Itoa(port),
		"--tls-cert-file", c.ServerCert, "--tls-key-file", c.ServerKey, "--tls-ca-cert-file", c.CAFile,
		"--tls-auth-clients", "yes"}
	r := &Redis{Port: port, Dir: t.TempDir(), bin: bin, extra: append(args, extra...)}
	if err := r.Start(); err != nil {
		log, _ := os.ReadFile(filepath.Join(r.Dir, "redis-"+strconv.Itoa(port)+".log"))
		t.Fatalf("starting Redis with TLS (was redis-server built with TLS?): %v\n%s", err, log)
	}
	t.Cleanup(r.Stop)
	return r
}

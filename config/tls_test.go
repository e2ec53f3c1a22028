package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // PEM of cert
}

func newCA(t *testing.T, dir, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name+".pem")
	writePEM(t, file, "CERTIFICATE", der)
	return &testCA{cert: cert, key: key, file: file}
}

// issue writes a leaf certificate for dnsName and its key; returns their paths.
func (ca *testCA) issue(t *testing.T, dir, dnsName string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: dnsName},
		DNSNames:     []string{dnsName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, dnsName+".crt"), filepath.Join(dir, dnsName+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// serveTLS accepts TLS connections on loopback with the given certificate
// and completes their handshakes; it returns the address.
func serveTLS(t *testing.T, certFile, keyFile string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}

func handshake(cfg *tls.Config, addr string) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	return conn.Close()
}

// TestMySQLTLSModes checks each mode's verification against a real TLS
// listener whose certificate names db.internal, not 127.0.0.1.
func TestMySQLTLSModes(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, dir, "ca")
	other := newCA(t, dir, "other-ca")
	certFile, keyFile := ca.issue(t, dir, "db.internal")
	addr := serveTLS(t, certFile, keyFile)

	cases := []struct {
		name   string
		tls    MySQLTLS
		wantOK bool
	}{
		{"required skips verification", MySQLTLS{Mode: TLSRequired}, true},
		{"verify-ca ignores the name", MySQLTLS{Mode: TLSVerifyCA, CAFile: ca.file}, true},
		{"verify-ca with the wrong CA", MySQLTLS{Mode: TLSVerifyCA, CAFile: other.file}, false},
		{"verify-identity checks the name", MySQLTLS{Mode: TLSVerifyIdentity, CAFile: ca.file}, false},
		{"verify-identity with server_name", MySQLTLS{Mode: TLSVerifyIdentity, CAFile: ca.file, ServerName: "db.internal"}, true},
		{"client certificate", MySQLTLS{Mode: TLSVerifyCA, CAFile: ca.file, CertFile: certFile, KeyFile: keyFile}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := tc.tls.Config(addr)
			if err != nil {
				t.Fatal(err)
			}
			err = handshake(cfg, addr)
			if tc.wantOK && err != nil {
				t.Errorf("handshake failed: %v", err)
			}
			if !tc.wantOK && err == nil {
				t.Errorf("handshake succeeded; want a verification error")
			}
		})
	}
	if cfg, err := (&MySQLTLS{Mode: TLSDisabled}).Config(addr); cfg != nil || err != nil {
		t.Errorf("disabled = %v, %v; want nil, nil", cfg, err)
	}

	// Through Load: files are checked at start and errors name the key.
	c := mustLoad(t, "", "BINLOGSYNC_REDIS_TLS_ENABLED=true", "BINLOGSYNC_REDIS_TLS_CA_FILE="+ca.file,
		"BINLOGSYNC_REDIS_TLS_SERVER_NAME=db.internal")
	cfg, err := c.Redis.TLS.Config()
	if err != nil || cfg == nil {
		t.Fatalf("redis tls = %v, %v", cfg, err)
	}
	if err := handshake(cfg, addr); err != nil {
		t.Errorf("redis tls handshake: %v", err)
	}
	_, err = load("", nil, []string{"BINLOGSYNC_MYSQL_TLS_MODE=verify-ca", "BINLOGSYNC_MYSQL_TLS_CA_FILE=" + keyFile})
	assertErr(t, err, "mysql.tls.ca_file "+keyFile+" holds no PEM certificate")
	_, err = load("", nil, []string{"BINLOGSYNC_KAFKA_TLS_ENABLED=true", "BINLOGSYNC_KAFKA_TLS_CERT_FILE=" + certFile, "BINLOGSYNC_KAFKA_TLS_KEY_FILE=" + ca.file})
	assertErr(t, err, "kafka.tls.cert_file/key_file: loading the client certificate")
}

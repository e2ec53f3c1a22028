package testenv

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestCertsMutualHandshake(t *testing.T) {
	c := NewCerts(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", c.ServerTLS(true))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan string, 8)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				peers <- "handshake failed"
			} else {
				peers <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
				_, _ = tc.Write([]byte("x")) // completes the client's view of the handshake (TLS 1.3)
			}
			tc.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	dial := func(host string, cfg *tls.Config) error {
		conn, err := tls.Dial("tcp", net.JoinHostPort(host, port), cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Read(make([]byte, 1))
		return err
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		if err := dial(host, c.ClientTLS()); err != nil {
			t.Fatalf("dialing %s with the CA and the client certificate: %v", host, err)
		}
		if got := <-peers; got != ClientCN {
			t.Fatalf("server saw client %q, want %q", got, ClientCN)
		}
	}

	// A client trusting another CA refuses the server; a client without a
	// certificate is refused.
	if err := dial("127.0.0.1", NewCerts(t).ClientTLS()); err == nil {
		t.Fatalf("a client trusting another CA accepted the server certificate")
	}
	<-peers
	noCert := c.ClientTLS()
	noCert.Certificates = nil
	if err := dial("127.0.0.1", noCert); err == nil {
		t.Fatalf("the server accepted a client without a certificate")
	}
	if got := <-peers; got != "handshake failed" {
		t.Fatalf("server accepted a client without a certificate as %q", got)
	}
}

func TestCertsFiles(t *testing.T) {
	c := NewCerts(t)
	read := func(path string) *x509.Certificate {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(raw)
		if b == nil || b.Type != "CERTIFICATE" {
			t.Fatalf("%s holds no PEM certificate", path)
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	ca := read(c.CAFile)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	srv := read(c.ServerCert)
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if err := srv.VerifyHostname("example.com"); err == nil {
		t.Errorf("server certificate valid for example.com")
	}
	cli := read(c.ClientCert)
	if _, err := cli.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := tls.LoadX509KeyPair(c.ClientCert, c.ClientKey); err != nil {
		t.Errorf("client key pair: %v", err)
	}
}

func TestNewTLSRedis(t *testing.T) {
	c := NewCerts(t)
	r := NewTLSRedis(t, c)
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), TLSConfig: c.ClientTLS(), DisableIdentity: true})
	defer rdb.Close()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET over TLS: %v", err)
	}

	// No plain text: a PING in clear gets no PONG.
	conn, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	_, _ = conn.Write([]byte("PING\r\n"))
	if line, _ := bufio.NewReader(conn).ReadString('\n'); line == "+PONG\r\n" {
		t.Fatalf("Redis answered a plain-text PING")
	}

	// Without a client certificate the server refuses the handshake.
	noCert := c.ClientTLS()
	noCert.Certificates = nil
	bare := redis.NewClient(&redis.Options{Addr: r.Addr(), TLSConfig: noCert, DisableIdentity: true, MaxRetries: -1})
	defer bare.Close()
	if err := bare.Ping(ctx).Err(); err == nil {
		t.Fatalf("Redis accepted a client without a certificate")
	}
}

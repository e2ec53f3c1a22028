package testenv

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}

func TestServersStart(t *testing.T) {
	m := SharedMariaDB(t)
	db := m.Root(t, "")
	var v string
	if err := db.QueryRow("SELECT @@binlog_format").Scan(&v); err != nil || v != "ROW" {
		t.Fatalf("binlog_format = %q, %v", v, err)
	}
	name := m.NewDatabase(t)
	m.Exec(t, "CREATE TABLE `"+name+"`.x (id INT PRIMARY KEY)")
	r := SharedRedis(t)
	if r.Addr() == "" {
		t.Fatal("no redis addr")
	}
}

func TestFreePortLocked(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		if p < portLow || p >= portHigh {
			t.Fatalf("port %d outside %d-%d", p, portLow, portHigh)
		}
		seen[p] = true
	}
	// Another process (here another open file) cannot lock a handed-out port.
	for p := range seen {
		f, err := os.OpenFile(filepath.Join(os.TempDir(), "binlogsync-test-ports", strconv.Itoa(p)), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		f.Close()
		if err == nil {
			t.Fatalf("port %d's lock was free", p)
		}
		break
	}
}

// A server that cannot bind its port must not pass for started because
// another server answers on that port.
func TestStartOnTakenPort(t *testing.T) {
	r := NewRedis(t)
	bin, err := lookBin("redis-server")
	if err != nil {
		t.Fatal(err)
	}
	other := &Redis{Port: r.Port, Dir: t.TempDir(), bin: bin}
	if err := other.Start(); err == nil {
		other.Stop()
		t.Fatalf("a second redis-server on port %d was reported started", r.Port)
	}

	m := SharedMariaDB(t)
	mb, err := lookBin("mariadbd", "mysqld")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := installDB(dir); err != nil {
		t.Fatal(err)
	}
	om := &MariaDB{Port: m.Port, Dir: dir, bin: mb}
	err = om.Start()
	if err == nil {
		om.Stop()
		t.Fatalf("a second mariadbd on port %d was reported started", m.Port)
	}
	if !strings.Contains(err.Error(), "Address already in use") {
		t.Fatalf("the second mariadbd failed for another reason than its port: %v", err)
	}
}

package testenv

import (
	"os"
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

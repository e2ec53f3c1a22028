package source

import (
	"encoding/hex"
	"testing"

	"github.com/binlogsync/binlogsync/internal/testenv"
)

// TestCharsetTablesMatchServer checks the conversions of charsets.go against the server's own: every byte of every
// single-byte set, text in the Unicode encodings, and the character set of every collation id.
func TestCharsetTablesMatchServer(t *testing.T) {
	m := testenv.SharedMariaDB(t)
	db := m.Root(t, "")
	for cs := range singleByteCharsets {
		rows, err := db.Query(`SELECT seq, HEX(CONVERT(CAST(UNHEX(LPAD(HEX(seq), 2, '0')) AS CHAR CHARACTER SET ` + cs +
			`) USING utf8mb4)) FROM mysql.seq_0_to_255`)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			var b int
			var want string
			if err := rows.Scan(&b, &want); err != nil {
				t.Fatal(err)
			}
			got, ok := appendConverted(nil, []byte{byte(b)}, cs)
			if !ok || hex.EncodeToString(got) != toLowerHex(want) {
				t.Errorf("%s byte %#02x: %x, the server gives %s", cs, b, got, want)
			}
			n++
		}
		rows.Close()
		if n != 256 {
			t.Fatalf("%s: %d bytes checked", cs, n)
		}
	}

	for _, cs := range []string{"utf16", "utf16le", "utf32", "ucs2"} {
		for _, text := range []string{"", "plain ascii", "é€ Ġ Ω ж 中 \x00 end", "emoji 😀👍🏽 astral", "  trailing  "} {
			if cs == "ucs2" && text == "emoji 😀👍🏽 astral" {
				continue // ucs2 has no characters beyond the BMP
			}
			var enc string
			if err := db.QueryRow("SELECT HEX(CONVERT(? USING "+cs+"))", text).Scan(&enc); err != nil {
				t.Fatal(err)
			}
			raw, err := hex.DecodeString(enc)
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := appendConverted(nil, raw, cs); !ok || string(got) != text {
				t.Errorf("%s %q (%s): got %q", cs, text, enc, got)
			}
		}
	}
	if got, _ := appendConverted(nil, []byte{0xD8, 0x00, 0x00}, "utf16"); string(got) != "??" {
		t.Errorf("a lone surrogate and an odd byte: %q, want \"??\"", got)
	}

	rows, err := db.Query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id uint64
		var cs string
		if err := rows.Scan(&id, &cs); err != nil {
			t.Fatal(err)
		}
		if got := collationCharset(id); got != normalizeCharset(cs) {
			t.Errorf("collation %d: %q, want %q", id, got, cs)
		}
	}
}

func toLowerHex(s string) string {
	b, _ := hex.DecodeString(s)
	return hex.EncodeToString(b)
}

package source

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Rendering of what the binlog does not describe and the schema does: ZEROFILL padding, and MariaDB's UUID, INET4
// and INET6 columns, which the binlog carries as BINARY(16)/BINARY(4) and SELECT prints as text.

// appendSpecial renders v for a column with ZeroFill or TextType set.
func (c *Column) appendSpecial(dst []byte, v any) ([]byte, bool, error) {
	if c.TextType != "" {
		s, ok := v.(string)
		if !ok {
			return dst, false, c.unexpected(v)
		}
		want := 16
		if c.TextType == "inet4" {
			want = 4
		}
		if len(s) > want {
			return dst, false, fmt.Errorf("rendering column %s: %d bytes for a %s value, want %d", c.Name, len(s), c.TextType, want)
		}
		var b [16]byte // the binlog drops BINARY's trailing zero bytes
		copy(b[:], s)
		switch c.TextType {
		case "uuid":
			return appendUUID(dst, b), false, nil
		case "inet4":
			return appendIPv4(dst, b[:4]), false, nil
		default:
			return appendIPv6(dst, b), false, nil
		}
	}
	start := len(dst)
	out, null, err := c.appendValue(dst, v)
	if err != nil || null || len(out)-start >= c.ZeroFill {
		return out, null, err
	}
	pad := c.ZeroFill - (len(out) - start)
	out = append(out, make([]byte, pad)...)
	copy(out[start+pad:], out[start:len(out)-pad])
	for i := start; i < start+pad; i++ {
		out[i] = '0'
	}
	return out, false, nil
}

func appendUUID(dst []byte, b [16]byte) []byte {
	var h [32]byte
	hex.Encode(h[:], b[:])
	dst = append(dst, h[0:8]...)
	dst = append(dst, '-')
	dst = append(dst, h[8:12]...)
	dst = append(dst, '-')
	dst = append(dst, h[12:16]...)
	dst = append(dst, '-')
	dst = append(dst, h[16:20]...)
	dst = append(dst, '-')
	return append(dst, h[20:32]...)
}

func appendIPv4(dst []byte, b []byte) []byte {
	for i := 0; i < 4; i++ {
		if i > 0 {
			dst = append(dst, '.')
		}
		dst = strconv.AppendUint(dst, uint64(b[i]), 10)
	}
	return dst
}

// appendIPv6 prints an address as MariaDB's INET6 does: the longest run of zero groups, even of one (the first
// of equal runs) as "::", groups in lower-case hex without leading zeros, and the last 32 bits as a dotted quad
// for IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) addresses.
func appendIPv6(dst []byte, b [16]byte) []byte {
	zero12 := true
	for _, x := range b[:10] {
		zero12 = zero12 && x == 0
	}
	if zero12 {
		switch {
		case b[10] == 0xff && b[11] == 0xff:
			return appendIPv4(append(dst, "::ffff:"...), b[12:])
		case b[10] == 0 && b[11] == 0 && (b[12] != 0 || b[13] != 0):
			return appendIPv4(append(dst, "::"...), b[12:])
		}
	}
	var g [8]uint16
	for i := range g {
		g[i] = uint16(b[2*i])<<8 | uint16(b[2*i+1])
	}
	best, bestLen := -1, 0
	for i := 0; i < 8; {
		if g[i] != 0 {
			i++
			continue
		}
		j := i
		for j < 8 && g[j] == 0 {
			j++
		}
		if j-i > bestLen {
			best, bestLen = i, j-i
		}
		i = j
	}
	var sb strings.Builder
	for i := 0; i < 8; i++ {
		if i == best {
			sb.WriteString("::")
			i += bestLen - 1
			continue
		}
		if i > 0 && i != best+bestLen {
			sb.WriteByte(':')
		}
		sb.WriteString(strconv.FormatUint(uint64(g[i]), 16))
	}
	return append(dst, sb.String()...)
}

// zeroFillWidth is the width a ZEROFILL integer or DECIMAL column pads to, from its COLUMN_TYPE
// ("int(6) unsigned zerofill", "decimal(5,3) unsigned zerofill"); 0 for other columns.
func zeroFillWidth(sc *SchemaColumn) int {
	ct := strings.ToLower(sc.ColumnType)
	if !strings.Contains(ct, "zerofill") {
		return 0
	}
	open := strings.IndexByte(ct, '(')
	end := strings.IndexByte(ct, ')')
	if open < 0 || end < open {
		return 0
	}
	args := strings.Split(ct[open+1:end], ",")
	m, err := strconv.Atoi(strings.TrimSpace(args[0]))
	if err != nil {
		return 0
	}
	switch sc.DataType {
	case "tinyint", "smallint", "mediumint", "int", "integer", "bigint":
		return m
	case "decimal", "numeric":
		if sc.Scale > 0 {
			return m + 1
		}
		return m
	}
	return 0 // FLOAT/DOUBLE: compared numerically (SPEC section 2)
}

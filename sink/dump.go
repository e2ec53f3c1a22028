package sink

import (
	"encoding/binary"
	"hash/crc64"
	"math"

	"github.com/binlogsync/binlogsync/change"
)

// Rows of the hash format are written with RESTORE. When they fit a listpack (Redis's compact encoding of small
// hashes), the sink renders the row as the payload DUMP would return for it, and the apply script creates or
// replaces the key with one RESTORE ... REPLACE instead of DEL, HSET (and PEXPIRE). Redis then copies one blob
// instead of turning every field and value into a Lua string and back into a Redis string: for a new 5-column row
// it costs Redis about 1.2 µs less (BenchmarkWriteFloor), a quarter of the write.
//
// The payload is [type 16 = RDB_TYPE_HASH_LISTPACK][RDB string: the listpack][RDB version, 2 bytes LE][CRC-64,
// 8 bytes LE]. Type 16 exists from RDB version 10 (Redis 7.0); later servers accept older versions. The listpack
// holds the field/value pairs "_v" first and then the columns in order, as HSET would store them (integers in
// Redis's integer encodings), so the key is byte for byte what the HSET path makes (TestHashPayloadMatchesDump).
// A row that does not fit a listpack is written with RESTORE too, as an RDB_TYPE_HASH payload (appendRowPayload).
//
// A server that refuses the payload (Redis before 7.0, an ACL or a rename-command without RESTORE) makes the
// script fail with NORESTORE; the sink then writes hash rows with HSET for restoreRetry (10 minutes), then tries
// RESTORE again (Sink.noRestoreUntil).

const (
	rdbTypeHashListpack = 16
	rdbVersion          = 10 // the first RDB version with rdbTypeHashListpack

	// Redis's defaults of hash-max-listpack-entries and hash-max-listpack-value: a hash larger than these is a
	// hash table, which HSET makes and a listpack payload would not, so such rows are sent as RDB_TYPE_HASH
	// (appendRowPayload).
	listpackMaxEntries = 128
	listpackMaxValue   = 64

	listpackHeader = 6 // total bytes (uint32) and element count (uint16)
	listpackEnd    = 0xFF
)

// redisCRC is Redis's CRC-64 (Jones polynomial, reflected, initial value and final XOR 0) in the reversed form
// that hash/crc64 takes.
var redisCRC = crc64.MakeTable(0x95AC9329AC4BC9B5)

// redisCRC8 extends redisCRC for slicing-by-8, as hash/crc64 does for its own tables only (and for inputs of
// 2 KiB or more): [k][b] is the CRC of byte b followed by k zero bytes.
var redisCRC8 = func() *[8][256]uint64 {
	var t [8][256]uint64
	t[0] = *redisCRC
	for i := range 256 {
		crc := t[0][i]
		for k := 1; k < 8; k++ {
			crc = t[0][byte(crc)] ^ crc>>8
			t[k][i] = crc
		}
	}
	return &t
}()

// crc64Redis returns Redis's CRC-64 of b, eight bytes a step: byte by byte, as hash/crc64 does for a table of its
// own, it cost the sink 0.22 µs per narrow row instead of 0.05 (BenchmarkCRC64Redis).
func crc64Redis(b []byte) uint64 {
	t := redisCRC8
	var crc uint64
	for len(b) >= 8 {
		crc ^= binary.LittleEndian.Uint64(b)
		crc = t[7][byte(crc)] ^ t[6][byte(crc>>8)] ^ t[5][byte(crc>>16)] ^ t[4][byte(crc>>24)] ^
			t[3][byte(crc>>32)] ^ t[2][byte(crc>>40)] ^ t[1][byte(crc>>48)] ^ t[0][crc>>56]
		b = b[8:]
	}
	for _, v := range b {
		crc = t[0][byte(crc)^v] ^ crc>>8
	}
	return crc
}

// fitsListpack reports whether a hash row of the version field plus the non-NULL values of row, under names,
// is a listpack under Redis's default limits.
func fitsListpack(names []string, row [][]byte) bool {
	entries := 2
	for c, v := range row {
		if v == nil {
			continue
		}
		if len(v) > listpackMaxValue || len(names[c]) > listpackMaxValue {
			return false
		}
		entries += 2
	}
	return entries <= listpackMaxEntries
}

// appendHashPayload appends to dst the RESTORE payload of the hash {"_v": ver, names[c]: row[c] for every
// non-NULL row[c]}. The row must fit (fitsListpack).
func appendHashPayload(dst []byte, ver []byte, names []string, row [][]byte) []byte {
	size := listpackHeader + 1 + lpEntrySize(versionField) + lpEntrySize(ver)
	n := 2
	for c, v := range row {
		if v != nil {
			size += lpEntrySize(names[c]) + lpEntrySize(v)
			n += 2
		}
	}
	start := len(dst)
	dst = append(dst, rdbTypeHashListpack)
	dst = appendRDBLen(dst, size)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(size))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(min(n, 0xFFFF)))
	dst = lpAppend(dst, versionField)
	dst = lpAppend(dst, ver)
	for c, v := range row {
		if v != nil {
			dst = lpAppend(dst, names[c])
			dst = lpAppend(dst, v)
		}
	}
	dst = append(dst, listpackEnd)
	dst = binary.LittleEndian.AppendUint16(dst, rdbVersion)
	return binary.LittleEndian.AppendUint64(dst, crc64Redis(dst[start:]))
}

// appendRowPayload appends to dst the RESTORE payload of the hash {"_v": ver, names[c]: row[c] for every
// non-NULL row[c]}: a listpack when the row fits one (appendHashPayload), else RDB_TYPE_HASH, the field/value
// pairs as RDB strings. Redis loads the latter into the encoding HSET would give the same hash: a hash table for
// more entries or longer values than the server's listpack limits, else a listpack. Compared with HSET from the
// script, Redis copies the row once instead of turning every field and value into a Lua string and back.
//
// The first pair of an RDB_TYPE_HASH payload is a long one (a value or name over listpackMaxValue bytes) when the
// row has one: Redis loads pairs into a listpack until it meets a long one and only then converts to a hash table,
// so a long pair first means no listpack is built and converted. For a row of 28 columns with two long values,
// that is 7 instead of 10 µs of Redis CPU per RESTORE (HSET: 8). The fields of a hash table have no order; a server
// with a higher hash-max-listpack-value keeps the pairs as a listpack in this order, which no command depends on.
func appendRowPayload(dst []byte, ver []byte, names []string, row [][]byte) []byte {
	if fitsListpack(names, row) {
		return appendHashPayload(dst, ver, names, row)
	}
	n, long := 1, -1
	for c, v := range row {
		if v != nil {
			n++
			if long < 0 && (len(v) > listpackMaxValue || len(names[c]) > listpackMaxValue) {
				long = c
			}
		}
	}
	start := len(dst)
	dst = append(dst, rdbTypeHash)
	dst = appendRDBLen(dst, n)
	if long >= 0 {
		dst = appendRDBString(dst, names[long])
		dst = appendRDBString(dst, row[long])
	}
	dst = appendRDBString(dst, versionField)
	dst = appendRDBString(dst, ver)
	for c, v := range row {
		if v != nil && c != long {
			dst = appendRDBString(dst, names[c])
			dst = appendRDBString(dst, v)
		}
	}
	dst = binary.LittleEndian.AppendUint16(dst, rdbVersion)
	return binary.LittleEndian.AppendUint64(dst, crc64Redis(dst[start:]))
}

// payloadBound is at least the size of appendRowPayload's payload for names and row, so that the payloads of a
// call fit one allocation: the bytes of the fields and values, plus at most 10 per string (a listpack entry's
// header and back-length, or an RDB string's length) and 40 for the type, the version field and the trailer.
func payloadBound(names []string, row [][]byte) int {
	n := 40 + change.VersionLen
	for c, v := range row {
		if v != nil {
			n += len(names[c]) + len(v) + 20
		}
	}
	return n
}

// rdbTypeHash is RDB_TYPE_HASH: a length (the number of pairs), then the fields and values as RDB strings.
const rdbTypeHash = 4

// appendRDBString appends s as an RDB string: its length, then its bytes (no integer or LZF encoding, which are
// optional).
func appendRDBString[T string | []byte](dst []byte, s T) []byte {
	return append(appendRDBLen(dst, len(s)), s...)
}

// versionField is the name of the version field (SPEC section 3).
const versionField = "_v"

// appendRDBLen appends n in RDB's length encoding.
func appendRDBLen(dst []byte, n int) []byte {
	switch {
	case n < 1<<6:
		return append(dst, byte(n))
	case n < 1<<14:
		return append(dst, 0x40|byte(n>>8), byte(n))
	case n <= math.MaxUint32:
		dst = append(dst, 0x80)
		return binary.BigEndian.AppendUint32(dst, uint32(n))
	default:
		dst = append(dst, 0x81)
		return binary.BigEndian.AppendUint64(dst, uint64(n))
	}
}

// lpInt reports whether s is an integer that Redis stores in a listpack as a number (lpStringToInt64: the
// canonical decimal text of an int64, no sign but a leading '-', no leading zeros, "-0" excluded).
func lpInt[T string | []byte](s T) (int64, bool) {
	n := len(s)
	if n == 0 || n > 20 {
		return 0, false
	}
	if n == 1 && s[0] == '0' {
		return 0, true
	}
	i, neg := 0, false
	if s[0] == '-' {
		neg, i = true, 1
		if n == 1 {
			return 0, false
		}
	}
	if s[i] < '1' || s[i] > '9' {
		return 0, false
	}
	var u uint64
	for ; i < n; i++ {
		d := s[i] - '0'
		if d > 9 {
			return 0, false
		}
		if u > (1<<64-1)/10 {
			return 0, false
		}
		u *= 10
		if u > 1<<64-1-uint64(d) {
			return 0, false
		}
		u += uint64(d)
	}
	if neg {
		if u > 1<<63 {
			return 0, false
		}
		return -int64(u), true // -(1<<63) wraps to itself, as wanted
	}
	if u > 1<<63-1 {
		return 0, false
	}
	return int64(u), true
}

// lpIntSize returns the size of the encoding of integer v (without the back length).
func lpIntSize(v int64) int {
	switch {
	case v >= 0 && v <= 127:
		return 1
	case v >= -4096 && v <= 4095:
		return 2
	case v >= -32768 && v <= 32767:
		return 3
	case v >= -8388608 && v <= 8388607:
		return 4
	case v >= -2147483648 && v <= 2147483647:
		return 5
	}
	return 9
}

// lpEncodedSize returns the size of the entry of s without its back length.
func lpEncodedSize[T string | []byte](s T) int {
	if v, ok := lpInt(s); ok {
		return lpIntSize(v)
	}
	switch n := len(s); {
	case n < 1<<6:
		return 1 + n
	case n < 1<<12:
		return 2 + n
	default:
		return 5 + n
	}
}

// lpBacklenSize returns the size of the back length of an entry of l bytes.
func lpBacklenSize(l int) int {
	switch {
	case l <= 127:
		return 1
	case l < 16383:
		return 2
	case l < 2097151:
		return 3
	case l < 268435455:
		return 4
	}
	return 5
}

// lpEntrySize returns the size of the listpack entry of s.
func lpEntrySize[T string | []byte](s T) int {
	l := lpEncodedSize(s)
	return l + lpBacklenSize(l)
}

// lpAppend appends the listpack entry of s: its encoding, then its back length.
func lpAppend[T string | []byte](dst []byte, s T) []byte {
	start := len(dst)
	if v, ok := lpInt(s); ok {
		switch size := lpIntSize(v); size {
		case 1:
			dst = append(dst, byte(v))
		case 2:
			u := uint64(v) & (1<<13 - 1)
			dst = append(dst, 0xC0|byte(u>>8), byte(u))
		case 3:
			dst = append(dst, 0xF1, byte(v), byte(v>>8))
		case 4:
			dst = append(dst, 0xF2, byte(v), byte(v>>8), byte(v>>16))
		case 5:
			dst = append(dst, 0xF3)
			dst = binary.LittleEndian.AppendUint32(dst, uint32(v))
		default:
			dst = append(dst, 0xF4)
			dst = binary.LittleEndian.AppendUint64(dst, uint64(v))
		}
	} else {
		switch n := len(s); {
		case n < 1<<6:
			dst = append(dst, 0x80|byte(n))
		case n < 1<<12:
			dst = append(dst, 0xE0|byte(n>>8), byte(n))
		default:
			dst = append(dst, 0xF0)
			dst = binary.LittleEndian.AppendUint32(dst, uint32(n))
		}
		dst = append(dst, s...)
	}
	return lpAppendBacklen(dst, len(dst)-start)
}

// lpAppendBacklen appends the back length of an entry of l bytes (lpEncodeBacklen): 7 bits a byte, most
// significant first, every byte after the first with the high bit set.
func lpAppendBacklen(dst []byte, l int) []byte {
	size := lpBacklenSize(l)
	dst = append(dst, byte(l>>(7*(size-1)))&127)
	for i := size - 2; i >= 0; i-- {
		dst = append(dst, byte(l>>(7*i))&127|128)
	}
	return dst
}

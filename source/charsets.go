package source

import (
	"sync"
	"unicode/utf8"
)

// Character sets other than UTF-8 are converted to UTF-8 the way the server converts them for SELECT over a
// utf8mb4 connection: latin1 (render.go), the single-byte sets by the server's own tables (charset_tables.go), and
// the Unicode encodings ucs2, utf16, utf16le and utf32. A byte sequence that is no character becomes "?", as the
// server renders it. The multi-byte Asian sets (big5, gbk, sjis, ...) are not converted: a column of one of them
// is reported when its table is first met.

// wideCharset reports whether cs encodes every character in two or four bytes (a space is not the byte ' ').
func wideCharset(cs string) bool {
	switch cs {
	case "ucs2", "utf16", "utf16le", "utf32":
		return true
	}
	return false
}

func supportedCharset(cs string) bool {
	switch cs {
	case "utf8mb4", "utf8mb3", "latin1", "ascii", "binary":
		return true
	}
	if wideCharset(cs) {
		return true
	}
	_, ok := singleByteCharsets[cs]
	return ok
}

var (
	singleByteOnce  sync.Once
	singleByteRunes map[string]*[256]rune
)

// singleByteTable returns the characters of cs's 256 bytes, or nil when cs is not a single-byte set.
func singleByteTable(cs string) *[256]rune {
	singleByteOnce.Do(func() {
		singleByteRunes = make(map[string]*[256]rune, len(singleByteCharsets))
		for name, chars := range singleByteCharsets {
			var t [256]rune
			i := 0
			for _, r := range chars {
				if i < 256 {
					t[i] = r
				}
				i++
			}
			if i != 256 {
				panic("charset table " + name + " does not have 256 characters")
			}
			singleByteRunes[name] = &t
		}
	})
	return singleByteRunes[cs]
}

// appendConverted appends s, in character set cs, converted to UTF-8; ok is false when cs is not one this file
// converts.
func appendConverted[T string | []byte](dst []byte, s T, cs string) (out []byte, ok bool) {
	switch cs {
	case "latin1":
		return appendLatin1(dst, s), true
	case "ucs2", "utf16":
		return appendUTF16(dst, s, false), true
	case "utf16le":
		return appendUTF16(dst, s, true), true
	case "utf32":
		for i := 0; i < len(s); i += 4 {
			if i+4 > len(s) {
				return append(dst, '?'), true
			}
			r := rune(s[i])<<24 | rune(s[i+1])<<16 | rune(s[i+2])<<8 | rune(s[i+3])
			if !utf8.ValidRune(r) {
				r = '?'
			}
			dst = utf8.AppendRune(dst, r)
		}
		return dst, true
	}
	t := singleByteTable(cs)
	if t == nil {
		return dst, false
	}
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x80 && t[b] == rune(b) {
			dst = append(dst, b)
		} else {
			dst = utf8.AppendRune(dst, t[b])
		}
	}
	return dst, true
}

// appendUTF16 decodes UTF-16 (big-endian unless le); an unpaired surrogate or an odd last byte becomes "?".
func appendUTF16[T string | []byte](dst []byte, s T, le bool) []byte {
	unit := func(i int) rune {
		if le {
			return rune(s[i]) | rune(s[i+1])<<8
		}
		return rune(s[i])<<8 | rune(s[i+1])
	}
	for i := 0; i < len(s); i += 2 {
		if i+2 > len(s) {
			return append(dst, '?')
		}
		r := unit(i)
		switch {
		case r >= 0xD800 && r < 0xDC00 && i+4 <= len(s):
			if lo := unit(i + 2); lo >= 0xDC00 && lo < 0xE000 {
				r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
				i += 2
			} else {
				r = '?'
			}
		case r >= 0xD800 && r < 0xE000:
			r = '?'
		}
		dst = utf8.AppendRune(dst, r)
	}
	return dst
}

// trimSpaces drops the trailing spaces of a converted CHAR value (dst[from:]).
func trimSpaces(dst []byte, from int) []byte {
	end := len(dst)
	for end > from && dst[end-1] == ' ' {
		end--
	}
	return dst[:end]
}

package config

import (
	"fmt"
	"hash/fnv"
	"path"
	"sort"
	"strings"
)

// systemSchemas are never replicated, whatever tables.include says.
var systemSchemas = map[string]bool{
	"mysql": true, "sys": true, "performance_schema": true, "information_schema": true,
}

// TableSelected reports whether db.table is replicated: it matches a
// tables.include glob, no tables.exclude glob, and is not in a system schema.
func (c *Config) TableSelected(db, table string) bool {
	if systemSchemas[strings.ToLower(db)] {
		return false
	}
	name := db + "." + table
	if !matchAny(c.Tables.Include, name) {
		return false
	}
	return !matchAny(c.Tables.Exclude, name)
}

// Rule returns the first tables.rules entry whose match glob selects
// db.table, or nil.
func (c *Config) Rule(db, table string) *TableRule {
	name := db + "." + table
	for i := range c.Tables.Rules {
		if ok, _ := path.Match(c.Tables.Rules[i].Match, name); ok {
			return &c.Tables.Rules[i]
		}
	}
	return nil
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, name); ok {
			return true
		}
	}
	return false
}

// DefaultServerID derives a replica server id from hostname, in
// [1_000_000_000, 4_000_000_000): stable across restarts of one host and far
// from the small ids real replicas use.
func DefaultServerID(hostname string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(hostname))
	return 1_000_000_000 + h.Sum32()%3_000_000_000
}

// KeySegment is a piece of a parsed key template: literal text, or a
// placeholder when Placeholder is not empty.
type KeySegment struct {
	Literal string
	// Placeholder is "db", "table", "pk" or a primary-key column name.
	Placeholder string
}

// ParseKeyTemplate splits a key template like "user:${id}" into segments.
// Placeholders are ${db}, ${table}, ${pk} (the primary-key values joined with
// ":") and ${<column>}; a literal "$" must start a placeholder. The template
// must name the row: ${pk} or at least one column. Whether the columns cover
// the primary key is checked against the table's schema by the sink.
func ParseKeyTemplate(tmpl string) ([]KeySegment, error) {
	if tmpl == "" {
		return nil, fmt.Errorf("empty key template; remove the key to use %q", DefaultKeyTemplate)
	}
	var segs []KeySegment
	names := false
	rest := tmpl
	for rest != "" {
		i := strings.IndexByte(rest, '$')
		if i < 0 {
			segs = append(segs, KeySegment{Literal: rest})
			break
		}
		if i > 0 {
			segs = append(segs, KeySegment{Literal: rest[:i]})
		}
		rest = rest[i:]
		if !strings.HasPrefix(rest, "${") {
			return nil, fmt.Errorf("template %q has a \"$\" not followed by \"{\"; write placeholders as ${name}", tmpl)
		}
		end := strings.IndexByte(rest, '}')
		if end < 0 {
			return nil, fmt.Errorf("template %q has an unclosed \"${\"; close it with \"}\"", tmpl)
		}
		name := rest[2:end]
		if name == "" || strings.ContainsAny(name, "${") {
			return nil, fmt.Errorf("template %q has a bad placeholder %q; use ${db}, ${table}, ${pk} or ${<primary-key column>}", tmpl, rest[:end+1])
		}
		if name != "db" && name != "table" {
			names = true
		}
		segs = append(segs, KeySegment{Placeholder: name})
		rest = rest[end+1:]
	}
	if !names {
		return nil, fmt.Errorf("template %q does not name the row, so every row would share one key; add ${pk} or the primary-key columns like ${id}", tmpl)
	}
	return segs, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// EnvPrefix starts every environment variable that overrides a key.
const EnvPrefix = "BINLOGSYNC_"

var durationType = reflect.TypeOf(time.Duration(0))

// maxNodes bounds the YAML nodes one file may make the decoder visit, so
// aliases cannot multiply the work.
const maxNodes = 100_000

type decoder struct {
	file   string
	c      *Config
	visits int
}

// decodeYAML decodes data over c, strictly: unknown keys, duplicate keys and
// wrong types are errors naming the file line and key path.
func decodeYAML(c *Config, file string, data []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // empty file: defaults only
		}
		if bytes.Contains(data, []byte("\t")) && strings.Contains(err.Error(), "cannot start any token") {
			return fmt.Errorf("parsing %s: %w (indent with spaces, not tabs)", file, err)
		}
		return fmt.Errorf("parsing %s: %w", file, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return fmt.Errorf("%s line %d: a second YAML document (---); put the whole configuration in one document", file, extra.Line)
	} else if !errors.Is(err, io.EOF) {
		return fmt.Errorf("parsing %s: %w", file, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	d := &decoder{file: file, c: c}
	return d.value(doc.Content[0], reflect.ValueOf(c).Elem(), "")
}

func (d *decoder) errf(n *yaml.Node, format string, args ...any) error {
	return fmt.Errorf("%s line %d: %s", d.file, n.Line, fmt.Sprintf(format, args...))
}

// value decodes n into v, the value at key path p ("" = the root).
func (d *decoder) value(n *yaml.Node, v reflect.Value, p string) error {
	d.visits++
	if d.visits > maxNodes {
		return d.errf(n, "more than %d YAML nodes (aliases expanding?); simplify the file", maxNodes)
	}
	line := n.Line // where the key is set, even when its value is an alias
	for depth := 0; n.Kind == yaml.AliasNode; depth++ {
		if depth > 10 || n.Alias == nil {
			return d.errf(n, "%s: alias chain too long", name(p))
		}
		n = n.Alias
	}
	if p != "" {
		d.c.origin[p] = fmt.Sprintf("%s line %d", d.file, line)
	}
	null := n.Kind == yaml.ScalarNode && n.Tag == "!!null"

	switch {
	case v.Kind() == reflect.Struct:
		if null {
			return nil // an empty section keeps its defaults
		}
		if n.Kind != yaml.MappingNode {
			return d.errf(n, "%s: want a mapping of keys, got %s", name(p), describe(n))
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return d.errf(k, "%s: keys must be plain names", name(p))
			}
			kp := join(p, k.Value)
			if line, ok := seen[k.Value]; ok {
				return d.errf(k, "key %q is set twice (first on line %d); keep one", kp, line)
			}
			seen[k.Value] = k.Line
			f, ok := fieldByKey(v, k.Value)
			if !ok && k.Value == "<<" {
				return d.errf(k, "%s: YAML merge keys (<<) are not supported; write the keys out", name(p))
			}
			if !ok {
				return d.errf(k, "unknown key %q%s", kp, suggestKey(v.Type(), p, k.Value))
			}
			if err := d.value(val, f, kp); err != nil {
				return err
			}
		}
		return nil

	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if null {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return d.errf(n, "%s: want a list, got %s", name(p), describe(n))
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := d.value(item, s.Index(i), fmt.Sprintf("%s[%d]", p, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil

	case v.Kind() == reflect.Slice:
		if null {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return d.errf(n, "%s: want a list like [a, b], got %s", name(p), describe(n))
		}
		out := make([]string, 0, len(n.Content))
		for i, item := range n.Content {
			d.visits++
			for item.Kind == yaml.AliasNode && item.Alias != nil {
				item = item.Alias
			}
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return d.errf(item, "%s[%d]: want a string, got %s", p, i, describe(item))
			}
			out = append(out, item.Value)
		}
		v.Set(reflect.ValueOf(out))
		return nil

	case v.Kind() == reflect.Map:
		if null {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return d.errf(n, "%s: want a mapping like {old: new}, got %s", name(p), describe(n))
		}
		m := make(map[string]string, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			d.visits++
			for val.Kind == yaml.AliasNode && val.Alias != nil {
				val = val.Alias
			}
			if k.Kind != yaml.ScalarNode || val.Kind != yaml.ScalarNode || val.Tag == "!!null" {
				return d.errf(k, "%s: want string: string entries", name(p))
			}
			if _, dup := m[k.Value]; dup {
				return d.errf(k, "%s: %q is set twice; keep one", name(p), k.Value)
			}
			m[k.Value] = val.Value
		}
		v.Set(reflect.ValueOf(m))
		return nil
	}

	if null {
		v.Set(reflect.Zero(v.Type()))
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return d.errf(n, "%s: want %s, got %s", name(p), want(v), describe(n))
	}
	if v.Kind() != reflect.String && n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 && n.Value == "" {
		return d.errf(n, "%s: want %s, got an empty string", name(p), want(v))
	}
	if err := setScalar(v, n.Value); err != nil {
		return d.errf(n, "%s: %v", name(p), err)
	}
	return nil
}

// setScalar parses s into the leaf v (string, bool, integer or duration).
func setScalar(v reflect.Value, s string) error {
	if v.Type() == durationType {
		if s == "0" {
			v.SetInt(0)
			return nil
		}
		dur, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("want a duration like \"500ms\" or \"1m30s\", got %q", s)
		}
		v.SetInt(int64(dur))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", s)
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64, reflect.Int32:
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("want an integer, got %q", s)
		}
		v.SetInt(i)
	case reflect.Uint32, reflect.Uint64, reflect.Uint:
		u, err := strconv.ParseUint(strings.ReplaceAll(s, "_", ""), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("want an integer in [0, %d], got %q", uint64(math.MaxUint64)>>(64-v.Type().Bits()), s)
		}
		v.SetUint(u)
	default:
		return fmt.Errorf("unsupported config type %s", v.Type())
	}
	return nil
}

// want describes what a leaf takes, for messages.
func want(v reflect.Value) string {
	if v.Type() == durationType {
		return "a duration like \"500ms\""
	}
	switch v.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	default:
		return "an integer"
	}
}

// describe names what a YAML node is, for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing (null)"
		}
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return strconv.Quote(v)
	}
	return "an unsupported YAML node"
}

func join(p, k string) string {
	if p == "" {
		return k
	}
	return p + "." + k
}

// name is p for messages ("the configuration" for the root).
func name(p string) string {
	if p == "" {
		return "the configuration"
	}
	return p
}

// fieldByKey returns the field of struct v whose yaml key is key.
func fieldByKey(v reflect.Value, key string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if k := yamlKey(t.Field(i)); k != "" && k == key {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}

// yamlKey is the key of a struct field, "" for unexported fields.
func yamlKey(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return k
}

// leaf is a key that takes a value (not a section).
type leaf struct {
	path   string // "mysql.tls.mode"; list elements are "tables.rules[].match"
	index  []int  // field index from Config
	secret bool
}

// leaves lists the leaf keys of t under prefix, in declaration order.
func leaves(t reflect.Type, prefix string, index []int) []leaf {
	var out []leaf
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		k := yamlKey(f)
		if k == "" {
			continue
		}
		p := join(prefix, k)
		idx := append(append([]int(nil), index...), i)
		switch {
		case f.Type.Kind() == reflect.Struct:
			out = append(out, leaves(f.Type, p, idx)...)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			out = append(out, leaves(f.Type.Elem(), p+"[]", nil)...)
		default:
			out = append(out, leaf{path: p, index: idx, secret: f.Tag.Get("secret") == "true"})
		}
	}
	return out
}

// envName is the environment variable overriding key path p.
func envName(p string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(p, ".", "_"))
}

// envIndex maps environment variable names to the leaves they set. Leaves
// inside lists of sections (tables.rules) have no variable.
func envIndex() (map[string]leaf, error) {
	m := map[string]leaf{}
	for _, l := range leaves(reflect.TypeOf(Config{}), "", nil) {
		if strings.Contains(l.path, "[]") {
			continue
		}
		n := envName(l.path)
		if other, dup := m[n]; dup {
			return nil, fmt.Errorf("keys %s and %s share the variable %s", other.path, l.path, n)
		}
		m[n] = l
	}
	return m, nil
}

// sectionEnv maps the variable of each section (BINLOGSYNC_MYSQL_TLS) to its
// path, to explain that sections are set key by key.
func sectionEnv(t reflect.Type, prefix string, out map[string]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		k := yamlKey(f)
		if k == "" {
			continue
		}
		p := join(prefix, k)
		switch {
		case f.Type.Kind() == reflect.Struct:
			out[envName(p)] = p
			sectionEnv(f.Type, p, out)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			out[envName(p)] = p
		}
	}
}

// applyEnv applies BINLOGSYNC_* variables of environ over c.
func applyEnv(c *Config, environ []string) error {
	idx, err := envIndex()
	if err != nil {
		return err
	}
	var sections map[string]string
	root := reflect.ValueOf(c).Elem()
	for _, kv := range environ {
		k, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		l, ok := idx[k]
		if !ok {
			if sections == nil {
				sections = map[string]string{}
				sectionEnv(root.Type(), "", sections)
			}
			if p, isSection := sections[k]; isSection {
				if p == "tables.rules" {
					return fmt.Errorf("environment variable %s: tables.rules can only be set in the config file; unset %s", k, k)
				}
				return fmt.Errorf("environment variable %s names the section %s; set its keys one by one (like %s_...) and unset %s", k, p, k, k)
			}
			return fmt.Errorf("environment variable %s matches no config key%s; fix its name or unset it", k, suggestEnv(idx, k))
		}
		f := root.FieldByIndex(l.index)
		switch f.Kind() {
		case reflect.Slice:
			var list []string
			for _, item := range strings.Split(val, ",") {
				if item = strings.TrimSpace(item); item != "" {
					list = append(list, item)
				}
			}
			f.Set(reflect.ValueOf(list))
		default:
			if err := setScalar(f, strings.TrimSpace(val)); err != nil {
				return fmt.Errorf("environment variable %s (%s): %v", k, l.path, err)
			}
		}
		c.origin[l.path] = "environment variable " + k
	}
	return nil
}

// readSecretFiles fills each secret from its <name>_file sibling.
func readSecretFiles(c *Config) error {
	root := reflect.ValueOf(c).Elem()
	for _, l := range leaves(root.Type(), "", nil) {
		if !l.secret {
			continue
		}
		secret := root.FieldByIndex(l.index)
		parent := root.FieldByIndex(l.index[:len(l.index)-1])
		key := l.path[strings.LastIndex(l.path, ".")+1:]
		fileField, ok := fieldByKey(parent, key+"_file")
		if !ok {
			continue
		}
		file := fileField.String()
		if file == "" {
			continue
		}
		if secret.String() != "" {
			return c.problem(l.path+"_file", "%s and %s_file are both set; keep only one", l.path, l.path)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			return c.problem(l.path+"_file", "reading %s_file: %v; fix the path or unset it", l.path, err)
		}
		s := strings.TrimRight(string(data), "\r\n")
		if s == "" {
			return c.problem(l.path+"_file", "%s_file %s is empty; write the secret into it or unset %s_file", l.path, file, l.path)
		}
		secret.SetString(s)
	}
	return nil
}

// suggestKey returns ` (did you mean "x"?)` for an unknown key k in section
// t at path p: the closest sibling, or a key of that name in another section.
func suggestKey(t reflect.Type, p, k string) string {
	var siblings []string
	for i := 0; i < t.NumField(); i++ {
		if sk := yamlKey(t.Field(i)); sk != "" {
			siblings = append(siblings, sk)
		}
	}
	if best := closest(k, siblings); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", join(p, best))
	}
	// The right key in the wrong section, like mysql.brokers.
	var elsewhere []string
	for _, l := range leaves(reflect.TypeOf(Config{}), "", nil) {
		if strings.HasSuffix(l.path, "."+k) || l.path == k {
			elsewhere = append(elsewhere, strings.ReplaceAll(l.path, "[]", "[i]"))
		}
	}
	if len(elsewhere) > 0 {
		sort.Strings(elsewhere)
		return fmt.Sprintf(" (did you mean %q?)", elsewhere[0])
	}
	return ""
}

// suggestEnv returns ` (did you mean X?)` for an unknown variable: the
// nearest key of the section its name starts with, else a name at most three
// edits away.
func suggestEnv(idx map[string]leaf, k string) string {
	names := make([]string, 0, len(idx))
	for n := range idx {
		names = append(names, n)
	}
	sort.Strings(names)
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		if t.Field(i).Type.Kind() != reflect.Struct {
			continue
		}
		section := envName(yamlKey(t.Field(i))) + "_"
		if !strings.HasPrefix(k, section) {
			continue
		}
		var rest []string
		for _, n := range names {
			if strings.HasPrefix(n, section) {
				rest = append(rest, strings.TrimPrefix(n, section))
			}
		}
		if best := closest(strings.TrimPrefix(k, section), rest); best != "" {
			return fmt.Sprintf(" (did you mean %s?)", section+best)
		}
		return ""
	}
	best, bestD := "", 4
	for _, n := range names {
		if d := editDistance(k, n); d < bestD {
			best, bestD = n, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %s?)", best)
	}
	return ""
}

// closest returns the candidate nearest to s by edit distance, or "" when
// none is near enough to be a likely typo.
func closest(s string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		d := editDistance(strings.ToLower(s), strings.ToLower(c))
		longer := max(len(s), len(c))
		if d >= longer || d > max(2, longer*2/3) {
			continue
		}
		if bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

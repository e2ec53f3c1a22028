package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Redacted returns the effective configuration as YAML, with every non-empty
// secret replaced by "***", for logging at start.
func (c *Config) Redacted() string {
	n := encode(reflect.ValueOf(c).Elem(), false)
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return fmt.Sprintf("# rendering the configuration: %v\n", err)
	}
	return b.String()
}

// encode renders v as a YAML node; secret hides a non-empty string.
func encode(v reflect.Value, secret bool) *yaml.Node {
	scalar := func(tag, s string) *yaml.Node {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: s}
	}
	if v.Type() == durationType {
		return scalar("!!str", formatDuration(time.Duration(v.Int())))
	}
	switch v.Kind() {
	case reflect.Struct:
		n := &yaml.Node{Kind: yaml.MappingNode}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			k := yamlKey(t.Field(i))
			if k == "" {
				continue
			}
			n.Content = append(n.Content, scalar("!!str", k),
				encode(v.Field(i), t.Field(i).Tag.Get("secret") == "true"))
		}
		return n
	case reflect.Slice:
		n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		if v.Type().Elem().Kind() == reflect.Struct {
			n.Style = 0
		}
		for i := 0; i < v.Len(); i++ {
			n.Content = append(n.Content, encode(v.Index(i), false))
		}
		return n
	case reflect.Map:
		n := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle}
		m := v.Interface().(map[string]string)
		for _, k := range sortedKeys(m) {
			n.Content = append(n.Content, scalar("!!str", k), scalar("!!str", m[k]))
		}
		return n
	case reflect.String:
		s := v.String()
		if secret && s != "" {
			s = "***"
		}
		return scalar("!!str", s)
	case reflect.Bool:
		return scalar("!!bool", strconv.FormatBool(v.Bool()))
	case reflect.Int, reflect.Int32, reflect.Int64:
		return scalar("!!int", strconv.FormatInt(v.Int(), 10))
	default:
		return scalar("!!int", strconv.FormatUint(v.Uint(), 10))
	}
}

// formatDuration prints d without zero tails: "24h", not "24h0m0s".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

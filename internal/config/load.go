// Package config loads the server's and the agent's YAML configuration,
// applies environment overrides and validates it. Every validation error
// names the field and the bad value. Secrets are never part of the file:
// the file names where they are (a file path or an environment variable).
package config

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// load reads path (strictly: unknown keys are errors) into dst, which
// already holds the defaults, then applies environment overrides named
// PREFIX_SECTION_FIELD after the yaml tags (AMTOPS_REDIS_ADDR).
func load(path, prefix string, dst any) error {
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("config: read %s: %w", path, err)
		}
		var doc yaml.Node
		// An empty file is valid and means "all defaults".
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return fmt.Errorf("config: %s: %w", path, err)
		}
		if len(doc.Content) > 0 {
			if err := decodeNode(doc.Content[0], reflect.ValueOf(dst).Elem(), ""); err != nil {
				return err
			}
		}
	}
	return applyEnv(reflect.ValueOf(dst).Elem(), prefix, "")
}

var durationType = reflect.TypeOf(time.Duration(0))

// decodeNode sets v from n, naming the field path in every error; yaml's
// own struct decoding only names line numbers.
func decodeNode(n *yaml.Node, v reflect.Value, path string) error {
	at := func(reason string) error {
		return &Error{Field: path, Value: n.Value, Reason: fmt.Sprintf("%s (line %d)", reason, n.Line)}
	}
	switch {
	case v.Kind() == reflect.Struct && v.Type() != durationType:
		if n.Kind != yaml.MappingNode {
			return at("must be a mapping")
		}
		fields := map[string]reflect.Value{}
		for i := 0; i < v.NumField(); i++ {
			if tag := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]; tag != "" && tag != "-" {
				fields[tag] = v.Field(i)
			}
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i].Value
			sub := key
			if path != "" {
				sub = path + "." + key
			}
			f, ok := fields[key]
			if !ok {
				return &Error{Field: sub, Reason: fmt.Sprintf("unknown option (line %d)", n.Content[i].Line)}
			}
			// A key given twice would silently keep the last value.
			if first, dup := seen[key]; dup {
				return &Error{Field: sub, Reason: fmt.Sprintf("given twice (lines %d and %d)", first, n.Content[i].Line)}
			}
			seen[key] = n.Content[i].Line
			if err := decodeNode(n.Content[i+1], f, sub); err != nil {
				return err
			}
		}
	case v.Kind() == reflect.Slice:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			v.Set(reflect.Zero(v.Type()))
			return nil
		}
		if n.Kind != yaml.SequenceNode {
			return at("must be a list")
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			if err := decodeNode(item, out.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(out)
	default:
		if n.Kind != yaml.ScalarNode {
			return at("must be a single value")
		}
		if err := setFromString(v, n.Value); err != nil {
			return at(err.Error())
		}
	}
	return nil
}

func applyEnv(v reflect.Value, env, field string) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		name := env + "_" + strings.ToUpper(tag)
		path := tag
		if field != "" {
			path = field + "." + tag
		}
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != durationType {
			if err := applyEnv(fv, name, path); err != nil {
				return err
			}
			continue
		}
		raw, ok := os.LookupEnv(name)
		if !ok {
			continue
		}
		if err := setFromString(fv, raw); err != nil {
			return &Error{Field: path, Value: raw, Reason: "from $" + name + ": " + err.Error()}
		}
	}
	return nil
}

func setFromString(v reflect.Value, s string) error {
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return err
		}
		v.SetInt(int64(n))
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		// From the environment: a comma-separated list.
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

// Error is a configuration error naming the field and the bad value.
type Error struct {
	Field  string
	Value  string
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("config: %s = %q: %s", e.Field, e.Value, e.Reason)
}

// checker collects the first error of a chain of checks.
type checker struct{ err error }

func (c *checker) fail(field string, value any, reason string) {
	if c.err == nil {
		c.err = &Error{Field: field, Value: fmt.Sprint(value), Reason: reason}
	}
}

func (c *checker) positive(field string, d time.Duration) {
	if d <= 0 {
		c.fail(field, d, "must be positive")
	}
}

func (c *checker) between(field string, n, lo, hi int) {
	if n < lo || n > hi {
		c.fail(field, n, fmt.Sprintf("must be between %d and %d", lo, hi))
	}
}

func (c *checker) oneOf(field, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	c.fail(field, v, "must be one of "+strings.Join(allowed, ", "))
}

func (c *checker) hostPort(field, v string, required bool) {
	if v == "" {
		if required {
			c.fail(field, v, "required (host:port)")
		}
		return
	}
	i := strings.LastIndex(v, ":")
	if i < 0 {
		c.fail(field, v, "must be host:port")
		return
	}
	if p, err := strconv.Atoi(v[i+1:]); err != nil || p < 0 || p > 65535 {
		c.fail(field, v, "port must be 0–65535")
	}
}

func (c *checker) fileExists(field, path string) {
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err != nil {
		c.fail(field, path, "file not readable: "+err.Error())
	}
}

// Secret reads a secret from a file (trailing newline trimmed) or, when
// file is empty, from the environment variable env. It returns "" when
// neither is set.
func Secret(file, env string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("config: read secret file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return os.Getenv(env), nil
}

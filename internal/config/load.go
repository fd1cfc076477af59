// Package config loads the server's and the agent's YAML configuration,
// applies environment overrides and validates it. Every error names the
// field, the bad value and where it came from (a line of the file or an
// environment variable), and all errors are reported at once. Secrets are
// never part of the file: the file names where they are (a file path or
// an environment variable).
package config

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Error is one configuration error naming the field and the bad value,
// and, when known, the line of the file or the environment variable the
// value came from.
type Error struct {
	Field  string
	Value  string
	Reason string
	Line   int    // 0: not from the file
	Env    string // the variable the value came from, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config: ")
	switch {
	case e.Env != "" && e.Field == "$"+e.Env: // the variable itself is the mistake
	case e.Env != "":
		b.WriteString("$" + e.Env + ": ")
	case e.Line > 0:
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	b.WriteString(e.Field)
	if e.Value != "" {
		b.WriteString(" = " + strconv.Quote(e.Value))
	}
	return b.String() + ": " + e.Reason
}

// otherEnv are the AMTOPS_* variables read outside this package's
// overrides: secrets (config.Secret callers), the site key and
// amtopsctl's flags. Any other AMTOPS_* name is a typo.
var otherEnv = []string{
	"AMTOPS_REDIS_PASSWORD", "AMTOPS_PROVISIONING_PASSWORD", "AMTOPS_DIRECTORY_PASSWORD",
	"AMTOPS_PKCS12_PASSWORD", "AMTOPS_MEBX_PASSWORD", "AMTOPS_SITE_KEY",
	"AMTOPS_SERVER", "AMTOPS_CA_FILE", "AMTOPS_TOKEN", "AMTOPS_TOKEN_FILE",
	"AMTOPS_AGENT_BOOTSTRAP_TOKEN", "AMTOPS_REQUIRE_PEERS", "AMTOPS_KEEP_OU",
}

// otherEnvPrefixes are families of variables that are not configuration:
// the test peers' addresses.
var otherEnvPrefixes = []string{"AMTOPS_TEST_"}

// loader decodes one configuration, collecting every error and
// remembering where each field's value came from.
type loader struct {
	prefix string
	root   reflect.Type
	skip   []string // env prefixes that belong to another loader
	errs   []*Error
	lines  map[string]int    // field path → line in the file
	env    map[string]string // field path → variable it was set from
	bad    map[string]bool   // fields that already have a decode error
}

// load reads path (strictly: unknown keys are errors) into dst, which
// already holds the defaults, applies environment overrides named
// PREFIX_SECTION_FIELD after the yaml tags (AMTOPS_REDIS_ADDR), then
// runs validate. It returns every error, joined.
func load(path, prefix string, skip []string, dst any, validate func() error) error {
	var b []byte
	if path != "" {
		var err error
		if b, err = os.ReadFile(path); err != nil {
			return fmt.Errorf("config: read %s: %w", path, err)
		}
	}
	err := parse(b, prefix, skip, dst, validate)
	var se *syntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("config: %s: %w", path, se.err)
	}
	return err
}

// syntaxError is a file that is not YAML; nothing else can be checked.
type syntaxError struct{ err error }

func (e *syntaxError) Error() string { return "config: " + e.err.Error() }

func parse(b []byte, prefix string, skip []string, dst any, validate func() error) error {
	v := reflect.ValueOf(dst).Elem()
	l := &loader{prefix: prefix, root: v.Type(), skip: skip, lines: map[string]int{}, env: map[string]string{}, bad: map[string]bool{}}
	var doc yaml.Node
	// An empty file is valid and means "all defaults".
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return &syntaxError{err}
	}
	if len(doc.Content) > 0 {
		l.decode(doc.Content[0], v, "")
	}
	known := map[string]bool{}
	l.applyEnv(v, prefix, "", known)
	l.unknownEnv(known)
	var verr error
	if validate != nil {
		verr = validate()
	}
	return l.result(verr)
}

func (l *loader) fail(n *yaml.Node, path, value, reason string) {
	l.errs = append(l.errs, &Error{Field: path, Value: value, Reason: reason, Line: n.Line})
	l.bad[path] = true
}

var durationType = reflect.TypeOf(time.Duration(0))

func isSection(v reflect.Value) bool { return v.Kind() == reflect.Struct && v.Type() != durationType }

// decode sets v from n, naming the field path in every error; yaml's own
// struct decoding only names line numbers.
func (l *loader) decode(n *yaml.Node, v reflect.Value, path string) {
	switch {
	case isSection(v):
		if n.Kind != yaml.MappingNode {
			l.fail(n, path, n.Value, "must be a section of options (key: value lines)")
			return
		}
		fields := yamlFields(v)
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn := n.Content[i]
			key, sub := kn.Value, join(path, kn.Value)
			f, ok := fields[key]
			if !ok {
				l.fail(kn, sub, "", "unknown option"+suggest(key, path, v.Type(), l.root))
				continue
			}
			// A key given twice would silently keep the last value.
			if first, dup := seen[key]; dup {
				l.fail(kn, sub, "", fmt.Sprintf("given twice (lines %d and %d)", first, kn.Line))
				continue
			}
			seen[key] = kn.Line
			l.lines[sub] = kn.Line
			l.decode(n.Content[i+1], f, sub)
		}
	case v.Kind() == reflect.Slice:
		if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
			v.Set(reflect.Zero(v.Type()))
			return
		}
		if n.Kind != yaml.SequenceNode {
			l.fail(n, path, n.Value, "must be a list")
			return
		}
		out := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			sub := fmt.Sprintf("%s[%d]", path, i)
			l.lines[sub] = item.Line
			l.decode(item, out.Index(i), sub)
		}
		v.Set(out)
	default:
		if n.Kind != yaml.ScalarNode {
			l.fail(n, path, "", "must be a single value, "+typeName(v.Type()))
			return
		}
		if err := setFromString(v, n.Value); err != nil {
			l.fail(n, path, n.Value, err.Error())
		}
	}
}

// yamlFields maps a struct's yaml keys to its fields.
func yamlFields(v reflect.Value) map[string]reflect.Value {
	fields := map[string]reflect.Value{}
	for i := 0; i < v.NumField(); i++ {
		if tag := yamlKey(v.Type().Field(i)); tag != "" {
			fields[tag] = v.Field(i)
		}
	}
	return fields
}

func yamlKey(f reflect.StructField) string {
	tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
	if tag == "-" {
		return ""
	}
	return tag
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (l *loader) applyEnv(v reflect.Value, env, path string, known map[string]bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		tag := yamlKey(t.Field(i))
		if tag == "" {
			continue
		}
		name, sub, fv := env+"_"+strings.ToUpper(tag), join(path, tag), v.Field(i)
		if isSection(fv) {
			l.applyEnv(fv, name, sub, known)
			continue
		}
		known[name] = true
		raw, ok := os.LookupEnv(name)
		if !ok {
			continue
		}
		l.env[sub] = name
		if err := setFromString(fv, raw); err != nil {
			l.errs = append(l.errs, &Error{Field: sub, Value: raw, Reason: err.Error(), Env: name})
			l.bad[sub] = true
		}
	}
}

// unknownEnv reports every PREFIX_* variable that is neither an override
// nor one of otherEnv: a misspelled override would otherwise be ignored.
func (l *loader) unknownEnv(known map[string]bool) {
	candidates := slices.Concat(slices.Collect(mapKeys(known)), otherEnv)
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, l.prefix+"_") || known[name] || slices.Contains(otherEnv, name) ||
			slices.ContainsFunc(slices.Concat(l.skip, otherEnvPrefixes), func(p string) bool { return strings.HasPrefix(name, p) }) {
			continue
		}
		reason := "unknown environment variable"
		if best := closest(name, candidates); len(best) > 0 {
			reason += "; did you mean $" + strings.Join(best, " or $") + "?"
		}
		l.errs = append(l.errs, &Error{Field: "$" + name, Reason: reason, Env: name})
	}
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// result annotates validation errors with where their value came from,
// drops those about fields that already failed to decode, and joins all
// errors in file order.
func (l *loader) result(verr error) error {
	for _, e := range unjoin(verr) {
		var ce *Error
		if !errors.As(e, &ce) {
			return errors.Join(append(asErrors(l.errs), verr)...)
		}
		if l.bad[ce.Field] {
			continue
		}
		if ce.Env = l.env[ce.Field]; ce.Env == "" {
			ce.Line = l.lineOf(ce.Field)
		}
		l.errs = append(l.errs, ce)
	}
	slices.SortStableFunc(l.errs, func(a, b *Error) int {
		// Environment errors first, then by line, options not in the file last.
		rank := func(e *Error) int {
			switch {
			case e.Env != "":
				return -1
			case e.Line == 0:
				return 1 << 30
			}
			return e.Line
		}
		return cmp.Compare(rank(a), rank(b))
	})
	return errors.Join(asErrors(l.errs)...)
}

// lineOf is the line of field, or of its nearest section in the file.
func (l *loader) lineOf(field string) int {
	for f := field; f != ""; {
		if n, ok := l.lines[f]; ok {
			return n
		}
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return 0
}

func asErrors(es []*Error) []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func setFromString(v reflect.Value, s string) error {
	fail := func() error { return errors.New("must be " + typeName(v.Type())) }
	switch {
	case v.Type() == durationType:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fail()
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fail()
		}
		v.SetBool(b)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fail()
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
		return errors.New("cannot be set from the environment; set it in the file")
	}
	return nil
}

// typeName says what a value of type t looks like, for error messages.
func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration such as 30s, 5m or 2h"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Int:
		return "a whole number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice:
		return "a list"
	}
	return "a section of options"
}

// suggest returns "; did you mean X?" for an unknown key under path of
// section type t: the closest sibling key, else an option of that name
// elsewhere under root (a key put in the wrong section).
func suggest(key, path string, t, root reflect.Type) string {
	var siblings []string
	for i := 0; i < t.NumField(); i++ {
		if k := yamlKey(t.Field(i)); k != "" {
			siblings = append(siblings, k)
		}
	}
	if best := closest(key, siblings); len(best) > 0 {
		for i := range best {
			best[i] = join(path, best[i])
		}
		return "; did you mean " + strings.Join(best, " or ") + "?"
	}
	var elsewhere []string
	walkPaths(root, "", func(p string) {
		if p == key || strings.HasSuffix(p, "."+key) {
			elsewhere = append(elsewhere, p)
		}
	})
	if len(elsewhere) > 0 {
		return "; did you mean " + strings.Join(elsewhere, " or ") + "?"
	}
	return ""
}

// walkPaths calls fn with the path of every option under t.
func walkPaths(t reflect.Type, path string, fn func(string)) {
	for i := 0; i < t.NumField(); i++ {
		k := yamlKey(t.Field(i))
		if k == "" {
			continue
		}
		ft, sub := t.Field(i).Type, join(path, k)
		fn(sub)
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != durationType {
			walkPaths(ft, sub, fn)
		}
	}
}

// closest lists the candidates nearest to s by edit distance (at most
// three, equally near), if near enough to be a plausible typo.
func closest(s string, candidates []string) []string {
	type scored struct {
		c string
		d int
	}
	var near []scored
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), strings.ToLower(c)); d <= max(1, len(s)/2) {
			near = append(near, scored{c, d})
		}
	}
	slices.SortFunc(near, func(a, b scored) int { return cmp.Or(cmp.Compare(a.d, b.d), strings.Compare(a.c, b.c)) })
	var out []string
	for _, n := range near {
		if len(out) < 3 && n.d == near[0].d {
			out = append(out, n.c)
		}
	}
	return out
}

// editDistance is the optimal-string-alignment distance between a and b:
// insertions, deletions, substitutions and swaps of neighbours cost one.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// checker collects every error of a chain of checks.
type checker struct{ errs []*Error }

func (c *checker) fail(field string, value any, reason string) {
	c.errs = append(c.errs, &Error{Field: field, Value: fmt.Sprint(value), Reason: reason})
}

// err joins the errors, sorted by field (checks iterate maps).
func (c *checker) err() error {
	slices.SortStableFunc(c.errs, func(a, b *Error) int { return strings.Compare(a.Field, b.Field) })
	return errors.Join(asErrors(c.errs)...)
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
	if !slices.Contains(allowed, v) {
		c.fail(field, v, "must be one of "+strings.Join(allowed, ", "))
	}
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

// Package wsmantest gives tests the recorded AMT replies: the copy of
// shared/fixtures/wsman-responses in internal/wsman/testdata/responses.
package wsmantest

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Fixtures returns every .xml reply by its path relative to the folder;
// a missing or thin folder fails t (the fuzzers are seeded from it).
func Fixtures(t testing.TB) map[string][]byte {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(self), "..", "testdata", "responses")
	out := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".xml") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = b
		return nil
	})
	if err != nil || len(out) < 250 {
		t.Fatalf("fixtures in %s: %d files, %v (want a copy of shared/fixtures/wsman-responses)", dir, len(out), err)
	}
	return out
}

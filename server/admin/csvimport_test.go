package admin

import (
	"fmt"
	"strings"
	"testing"
)

func TestParseCSVHeaderOrder(t *testing.T) {
	rows, err := parseCSV([]byte("\xef\xbb\xbfIP, Domain ,host_name,subnet\n10.0.0.1,amt.test.,pc1,10.0.0.0/24\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := rows[0]
	if r.host != "pc1" || r.domain != "amt.test" || r.ip.String() != "10.0.0.1" || r.subnet.String() != "10.0.0.0/24" || r.line != 2 {
		t.Fatalf("row = %+v", r)
	}
}

// The reply lists at most maxCSVErrors problems and counts the rest.
func TestParseCSVManyErrors(t *testing.T) {
	var b strings.Builder
	b.WriteString("host_name,domain,ip\n")
	for i := range 30 {
		fmt.Fprintf(&b, "pc%d,amt.test,bad%d\n", i, i)
	}
	_, err := parseCSV([]byte(b.String()))
	if err == nil || strings.Count(err.Error(), "csv line") != maxCSVErrors || !strings.Contains(err.Error(), "and 10 more problems") {
		t.Fatalf("err = %v", err)
	}
}

// BenchmarkParseCSV checks a 10,000-device import file.
func BenchmarkParseCSV(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("host_name,domain,ip,uuid\n")
	for i := range 10000 {
		fmt.Fprintf(&sb, "pc%d,amt.test,10.%d.%d.%d,\n", i, i>>16&255, i>>8&255, i&255)
	}
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := parseCSV(data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(10000*b.N)/b.Elapsed().Seconds(), "rows/s")
}

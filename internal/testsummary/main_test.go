package main

import (
	"strings"
	"testing"
)

// events is go test -json of two packages, one passing with a subtest,
// one with a failing test, and a package without tests.
const events = `{"Action":"start","Package":"a"}
{"Action":"run","Package":"a","Test":"TestOne"}
{"Action":"output","Package":"a","Test":"TestOne","Output":"=== RUN   TestOne\n"}
{"Action":"run","Package":"a","Test":"TestOne/sub"}
{"Action":"output","Package":"a","Test":"TestOne/sub","Output":"quiet sub output\n"}
{"Action":"pass","Package":"a","Test":"TestOne/sub"}
{"Action":"output","Package":"a","Test":"TestOne","Output":"--- PASS: TestOne\n"}
{"Action":"pass","Package":"a","Test":"TestOne"}
{"Action":"output","Package":"a","Output":"PASS\n"}
{"Action":"output","Package":"a","Output":"ok  \ta\t0.1s\n"}
{"Action":"pass","Package":"a"}
{"Action":"start","Package":"b"}
{"Action":"run","Package":"b","Test":"TestBad"}
{"Action":"output","Package":"b","Test":"TestBad","Output":"    b_test.go:9: the reason\n"}
{"Action":"output","Package":"b","Test":"TestBad","Output":"--- FAIL: TestBad\n"}
{"Action":"fail","Package":"b","Test":"TestBad"}
{"Action":"output","Package":"b","Output":"FAIL\tb\t0.1s\n"}
{"Action":"fail","Package":"b"}
{"Action":"start","Package":"c"}
{"Action":"output","Package":"c","Output":"?   \tc\t[no test files]\n"}
{"Action":"skip","Package":"c"}
`

func TestSummarize(t *testing.T) {
	var out strings.Builder
	got, err := summarize(strings.NewReader(events), &out)
	if err != nil {
		t.Fatal(err)
	}
	printed := out.String()
	for _, want := range []string{"ok  \ta\t0.1s", "the reason", "--- FAIL: TestBad", "FAIL\tb", "[no test files]"} {
		if !strings.Contains(printed, want) {
			t.Errorf("output lacks %q:\n%s", want, printed)
		}
	}
	for _, unwanted := range []string{"quiet sub output", "--- PASS", "PASS\n"} {
		if strings.Contains(printed, unwanted) {
			t.Errorf("output has %q, which a plain go test hides:\n%s", unwanted, printed)
		}
	}
	if got.packages != 3 || got.withTests != 2 || got.passed != 1 || got.subtests != 1 || got.failed != 1 {
		t.Errorf("tally %+v", *got)
	}
	if got.ok() || !strings.Contains(got.String(), "1 FAILED") || !strings.Contains(got.String(), "packages FAILED: b") {
		t.Errorf("a failed run summarized as %q (ok %v)", got, got.ok())
	}
}

func TestSummarizeUnfinished(t *testing.T) {
	// A test binary that died mid-test never sends its package's end.
	in := `{"Action":"start","Package":"a"}
{"Action":"run","Package":"a","Test":"TestOne"}
{"Action":"output","Package":"a","Test":"TestOne","Output":"panic: boom\n"}
`
	var out strings.Builder
	got, err := summarize(strings.NewReader(in), &out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "panic: boom") {
		t.Errorf("the output of the test cut short is not shown:\n%s", out.String())
	}
	if got.ok() || !strings.Contains(got.String(), "a (never ended)") {
		t.Errorf("an unfinished package summarized as %q (ok %v)", got, got.ok())
	}
}

func TestSummarizeSkip(t *testing.T) {
	in := `{"Action":"start","Package":"a"}
{"Action":"run","Package":"a","Test":"TestOne"}
{"Action":"skip","Package":"a","Test":"TestOne"}
{"Action":"pass","Package":"a"}
`
	got, err := summarize(strings.NewReader(in), new(strings.Builder))
	if err != nil {
		t.Fatal(err)
	}
	if got.ok() || !strings.Contains(got.String(), "SKIPPED (a.TestOne)") {
		t.Errorf("a skipped test summarized as %q (ok %v): no skip counts as passing", got, got.ok())
	}
}

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestFilterProcessRemovesMissingCapabilitiesFromEverySet(t *testing.T) {
	var process map[string]any
	raw := `{"capabilities": {"bounding": ["CAP_CHOWN", "CAP_SYS_RESOURCE"], "effective": ["CAP_SYS_RESOURCE"],
		"permitted": ["CAP_KILL"]}, "oomScoreAdj": -998}`
	if err := json.Unmarshal([]byte(raw), &process); err != nil {
		t.Fatal(err)
	}
	if !filterProcess(process, map[string]bool{"CAP_SYS_RESOURCE": true}, 0) {
		t.Fatal("reported no change")
	}
	caps := process["capabilities"].(map[string]any)
	if got := caps["bounding"]; !reflect.DeepEqual(got, []any{"CAP_CHOWN"}) {
		t.Errorf("bounding = %v", got)
	}
	if got := caps["effective"]; !reflect.DeepEqual(got, []any{}) {
		t.Errorf("effective = %v", got)
	}
	if got := caps["permitted"]; !reflect.DeepEqual(got, []any{"CAP_KILL"}) {
		t.Errorf("permitted = %v", got)
	}
	if got := process["oomScoreAdj"]; got != 0 {
		t.Errorf("oomScoreAdj = %v, want it raised to the floor 0", got)
	}
}

func TestFilterProcessLeavesACompleteSetAlone(t *testing.T) {
	process := map[string]any{
		"capabilities": map[string]any{"bounding": []any{"CAP_SYS_RESOURCE"}},
		"oomScoreAdj":  float64(500),
	}
	if filterProcess(process, map[string]bool{}, 0) {
		t.Fatal("changed a process that asks for nothing missing")
	}
}

func TestCommandSkipsGlobalOptionsAndTheirValues(t *testing.T) {
	sub, rest := command([]string{"--root", "/run/runc", "--log", "/x.log", "--log-format", "json",
		"--systemd-cgroup", "create", "--bundle", "/b", "id"})
	if sub != "create" || !reflect.DeepEqual(rest, []string{"--bundle", "/b", "id"}) {
		t.Fatalf("command = %q %v", sub, rest)
	}
	if got := flagValue(rest, "--bundle", "-b"); got != "/b" {
		t.Errorf("bundle = %q", got)
	}
	if got := flagValue([]string{"--process=/p.json"}, "--process", "-p"); got != "/p.json" {
		t.Errorf("process = %q", got)
	}
}

func TestRewriteKeepsAFileThatNeedsNoChangeByteForByte(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	original := []byte(`{"process": {"args": ["sh"]},   "z": 1}`)
	if err := os.WriteFile(path, original, 0o600); err != nil {
		t.Fatal(err)
	}
	rewrite(path, func(map[string]any) bool { return false })
	got, _ := os.ReadFile(path)
	if string(got) != string(original) {
		t.Errorf("file rewritten: %s", got)
	}
}

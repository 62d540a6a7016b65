// runc-capfilter runs runc after removing, from the container's OCI configuration, the
// capabilities this machine's capability bounding set lacks, and after raising an
// oom_score_adj lower than its own (lowering it needs CAP_SYS_RESOURCE).
//
// Some virtual machines start every process without a capability (here CAP_SYS_RESOURCE).
// runc gives a privileged container every capability it knows of, and asking for one
// outside the bounding set fails with "unable to apply caps: operation not permitted".
// Docker's engine and the containerd inside a kind node run this program in runc's place
// (dockerd --add-runtime/--default-runtime; containerd's BinaryName). It changes nothing
// where the bounding set is complete, and nothing in the container gets more than it had.
//
// It edits <bundle>/config.json for "create" and "run" (the bundle is --bundle/-b, or the
// working directory) and the --process/-p file for "exec", then replaces itself with runc:
// $RUNC_CAPFILTER_RUNC, else the first of /usr/local/sbin/runc, /usr/sbin/runc,
// /usr/bin/runc that exists. Every argument is passed on unchanged.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// capNames are the kernel's capability names by number, as the OCI configuration spells them.
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
	"CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
	"CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
	"CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
	"CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
	"CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "runc-capfilter: "+format+"\n", args...)
	os.Exit(1)
}

// missingCaps returns the capability names whose bit is clear in this process's CapBnd.
func missingCaps() map[string]bool {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fail("reading /proc/self/status: %v", err)
	}
	missing := map[string]bool{}
	for _, line := range strings.Split(string(status), "\n") {
		value, ok := strings.CutPrefix(line, "CapBnd:")
		if !ok {
			continue
		}
		bits, err := strconv.ParseUint(strings.TrimSpace(value), 16, 64)
		if err != nil {
			fail("CapBnd %q: %v", value, err)
		}
		for number, name := range capNames {
			if bits&(1<<uint(number)) == 0 {
				missing[name] = true
			}
		}
	}
	return missing
}

func ownOOMScoreAdj() int {
	raw, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0
	}
	value, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0
	}
	return value
}

// filterProcess edits an OCI "process" object in place; it reports whether it changed it.
func filterProcess(process map[string]any, missing map[string]bool, floor int) bool {
	changed := false
	if caps, ok := process["capabilities"].(map[string]any); ok {
		for set, list := range caps {
			names, ok := list.([]any)
			if !ok {
				continue
			}
			kept := make([]any, 0, len(names))
			for _, name := range names {
				if s, ok := name.(string); ok && missing[s] {
					changed = true
					continue
				}
				kept = append(kept, name)
			}
			caps[set] = kept
		}
	}
	if adj, ok := process["oomScoreAdj"].(float64); ok && int(adj) < floor {
		process["oomScoreAdj"] = floor
		changed = true
	}
	return changed
}

// rewrite loads a JSON file, lets edit change it, and writes it back when it did.
func rewrite(path string, edit func(map[string]any) bool) {
	raw, err := os.ReadFile(path)
	if err != nil {
		fail("reading %s: %v", path, err)
	}
	var document map[string]any
	if err := json.Unmarshal(raw, &document); err != nil {
		fail("parsing %s: %v", path, err)
	}
	if !edit(document) {
		return
	}
	out, err := json.Marshal(document)
	if err != nil {
		fail("encoding %s: %v", path, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		fail("stat %s: %v", path, err)
	}
	if err := os.WriteFile(path, out, info.Mode().Perm()); err != nil {
		fail("writing %s: %v", path, err)
	}
}

// flagValue finds "--name value", "--name=value" (and the short form) in runc's arguments.
func flagValue(args []string, long, short string) string {
	for i, arg := range args {
		for _, flag := range []string{long, short} {
			if flag == "" {
				continue
			}
			if arg == flag && i+1 < len(args) {
				return args[i+1]
			}
			if value, ok := strings.CutPrefix(arg, flag+"="); ok {
				return value
			}
		}
	}
	return ""
}

// command is runc's subcommand: the first argument that is not a global option or its value.
func command(args []string) (string, []string) {
	withValue := map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if !strings.HasPrefix(arg, "-") {
			return arg, args[i+1:]
		}
		if withValue[arg] {
			i++
		}
	}
	return "", nil
}

func realRunc() string {
	if path := os.Getenv("RUNC_CAPFILTER_RUNC"); path != "" {
		return path
	}
	for _, path := range []string{"/usr/local/sbin/runc", "/usr/sbin/runc", "/usr/bin/runc"} {
		if info, err := os.Stat(path); err == nil && !info.IsDir() {
			return path
		}
	}
	fail("no runc found (set RUNC_CAPFILTER_RUNC)")
	return ""
}

func main() {
	args := os.Args[1:]
	missing := missingCaps()
	floor := ownOOMScoreAdj()
	sub, rest := command(args)
	switch sub {
	case "create", "run":
		bundle := flagValue(rest, "--bundle", "-b")
		if bundle == "" {
			bundle = "."
		}
		rewrite(filepath.Join(bundle, "config.json"), func(config map[string]any) bool {
			process, ok := config["process"].(map[string]any)
			return ok && filterProcess(process, missing, floor)
		})
	case "exec":
		if path := flagValue(rest, "--process", "-p"); path != "" {
			rewrite(path, func(process map[string]any) bool {
				return filterProcess(process, missing, floor)
			})
		}
	}
	runc := realRunc()
	if err := syscall.Exec(runc, append([]string{runc}, args...), os.Environ()); err != nil {
		fail("exec %s: %v", runc, err)
	}
}

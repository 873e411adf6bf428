// Command vmtest runs fibmesh's kernel-dependent tests (kTLS, sockmap
// with kTLS) in a VM on Debian's stock kernel, for machines whose own
// kernel lacks them. `make vmtest` runs it; see docs/vmtest.md.
//
// It fetches the kernel image package that linux-image-amd64 depends on
// (apt-get download, unpacked into a cache, never installed), builds each
// package's tests as a static binary (CGO_ENABLED=0 go test -c), packs
// them with a static busybox, an /init script and the kernel modules the
// tests need (veth, tls, the kTLS AEADs) into an initramfs, boots it under
// qemu-system-x86_64 with TCG, and copies the VM's console to stdout.
//
// Exit status: 0 every test binary passed; 1 a test binary failed (or did
// not build); 2 bad usage; 3 the VM gave no result (no qemu, kernel panic,
// timeout) or the harness failed.
//
// Usage:
//
//	go run ./hack/vmtest [flags]
//
// Flags default from the environment: VMTEST_PKGS (packages, space
// separated), VMTEST_RUN (-test.run regexp), VMTEST_ARGS (more test
// binary flags, space separated).
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// defaultPkgs are the packages whose tests need the VM's kernel; a
// package may carry its own -test.run filter after a colon: of e2e, the
// VM runs the offload tests (a lab under TCG takes minutes per test).
const defaultPkgs = "./internal/vmcheck ./internal/netnstest ./fastpath/ktls ./fastpath/splice ./perf/ktlsbench ./fastpath/fib:^TestXDP ./slowpath/proxy:^(TestEndToEnd|TestOffloadDecision|TestRevoke|TestRevokeDuringSetup|TestNoRevoke|TestNICTLS|TestOffloadManyShort)$ ./e2e:^TestOffload"

type options struct {
	pkgs         []pkgSpec
	hostTools    []string
	commands     string
	run          string
	args         []string
	timeout      time.Duration
	testTimeout  time.Duration
	smp          int
	mem          string
	cacheDir     string
	kernelDir    string
	busybox      string
	qemu         string
	modules      []string
	appendArgs   string
	panicRetries int
	keep         bool
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func envOr(key, def string) string {
	if v, ok := os.LookupEnv(key); ok && strings.TrimSpace(v) != "" {
		return v
	}
	return def
}

func parseFlags(argv []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("vmtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cache, _ := os.UserCacheDir() // ${XDG_CACHE_HOME:-$HOME/.cache}
	pkgs := fs.String("pkgs", envOr("VMTEST_PKGS", defaultPkgs), "packages whose tests run in the VM, space separated, each PATTERN or PATTERN:REGEXP (that package's own -test.run) (env VMTEST_PKGS); missing ones are skipped with a note")
	o := &options{}
	fs.StringVar(&o.run, "run", os.Getenv("VMTEST_RUN"), "only tests matching this regexp (-test.run; env VMTEST_RUN)")
	args := fs.String("args", os.Getenv("VMTEST_ARGS"), "more test binary flags, space separated, e.g. \"-test.short\" (env VMTEST_ARGS)")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Minute, "the whole VM run: boot, every test binary, power off")
	fs.DurationVar(&o.testTimeout, "test-timeout", 10*time.Minute, "each test binary's -test.timeout")
	fs.IntVar(&o.smp, "smp", 2, "virtual CPUs (multi-threaded TCG with more than one)")
	fs.StringVar(&o.mem, "mem", "3G", "guest memory (qemu -m); the initramfs, /tmp and a lab's processes share it")
	fs.StringVar(&o.cacheDir, "cache", filepath.Join(cache, "fibmesh", "vmtest"), "where the downloaded kernel is kept")
	fs.StringVar(&o.kernelDir, "kernel-dir", os.Getenv("VMTEST_KERNEL_DIR"), "an already extracted linux-image package to boot instead of fetching one (env VMTEST_KERNEL_DIR)")
	fs.StringVar(&o.busybox, "busybox", "busybox", "static busybox (Debian: busybox-static)")
	fs.StringVar(&o.qemu, "qemu", "qemu-system-x86_64", "qemu binary")
	mods := fs.String("modules", "", "more kernel modules to load in the VM, space separated")
	tools := fs.String("host-tools", strings.Join(defaultHostTools, " "), "host programs to copy into the VM with their shared libraries, space separated (the lab's ip, ethtool, nsenter)")
	fs.StringVar(&o.commands, "commands", "auto", "build the module's commands (fibmesh-lab, -controller, -agent, fibctl) statically into the VM as $FIBMESH_TEST_BIN: auto (when a package's tests run them), always, never")
	fs.StringVar(&o.appendArgs, "append", "", "more kernel command line")
	fs.IntVar(&o.panicRetries, "panic-retries", 1, "if the guest kernel panics, boot a fresh VM this many times to run the test binary that was running and the rest (the panic is logged and named in the last line); 0 fails at once")
	fs.BoolVar(&o.keep, "keep", false, "keep the work directory (test binaries, initramfs) and print its path")
	if err := fs.Parse(argv); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (packages go in -pkgs)", fs.Args())
	}
	for _, p := range strings.Fields(*pkgs) {
		spec, err := parsePkgSpec(p)
		if err != nil {
			return nil, err
		}
		o.pkgs = append(o.pkgs, spec)
	}
	o.hostTools = strings.Fields(*tools)
	switch o.commands {
	case "auto", "always", "never":
	default:
		return nil, fmt.Errorf("-commands %q: want auto, always or never", o.commands)
	}
	o.args = strings.Fields(*args)
	o.modules = append(append([]string(nil), defaultModules...), strings.Fields(*mods)...)
	if len(o.pkgs) == 0 {
		return nil, errors.New("no packages (-pkgs)")
	}
	if o.panicRetries < 0 {
		return nil, fmt.Errorf("-panic-retries %d: want 0 or more", o.panicRetries)
	}
	if o.smp < 1 {
		return nil, fmt.Errorf("-smp %d: want at least 1", o.smp)
	}
	if o.testTimeout >= o.timeout {
		return nil, fmt.Errorf("-test-timeout %v must be shorter than -timeout %v", o.testTimeout, o.timeout)
	}
	return o, nil
}

// anyCommands reports whether a test binary runs the module's commands.
func anyCommands(tests []testBinary) bool {
	for _, t := range tests {
		if t.Commands {
			return true
		}
	}
	return false
}

func run(argv []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(argv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "vmtest:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "vmtest: "+format+"\n", a...) }
	rc, err := vmtest(ctx, o, stdout, logf)
	if err != nil {
		logf("%v", err)
	}
	return rc
}

// vmtest does the run and returns the exit status.
func vmtest(ctx context.Context, o *options, stdout io.Writer, logf func(string, ...any)) (int, error) {
	t0 := time.Now()
	qemu, err := exec.LookPath(o.qemu)
	if err != nil {
		return 3, fmt.Errorf("%s not found: install qemu-system-x86 (hack/deps.sh vmtest): %w", o.qemu, err)
	}
	bb, err := exec.LookPath(o.busybox)
	if err != nil {
		return 3, fmt.Errorf("busybox not found: install busybox-static (hack/deps.sh vmtest): %w", err)
	}
	applets, err := staticBusybox(ctx, bb)
	if err != nil {
		return 3, err
	}

	var k *kernel
	if o.kernelDir != "" {
		k, err = openKernel(o.kernelDir)
	} else {
		k, err = fetchKernel(ctx, o.cacheDir, logf)
	}
	if err != nil {
		return 3, err
	}
	idx, err := newModuleIndex(k.ModDir)
	if err != nil {
		return 3, err
	}
	mods, notes, err := idx.closure(ctx, o.modules)
	if err != nil {
		return 3, err
	}
	for _, n := range notes {
		logf("%s", n)
	}

	work, err := os.MkdirTemp("", "fibmesh-vmtest-")
	if err != nil {
		return 3, fmt.Errorf("work directory: %w", err)
	}
	if o.keep {
		logf("work directory: %s", work)
	} else {
		defer os.RemoveAll(work)
	}
	tests, failedBuilds, err := buildTests(ctx, o.pkgs, work, logf)
	if err != nil {
		return 3, err
	}
	if len(tests) == 0 {
		var pats []string
		for _, p := range o.pkgs {
			pats = append(pats, p.Pattern)
		}
		logf("no test binaries to run (packages: %s)", strings.Join(pats, " "))
		if failedBuilds > 0 {
			return 1, nil
		}
		return 0, nil
	}

	commandsDir := ""
	if o.commands == "always" || o.commands == "auto" && anyCommands(tests) {
		commandsDir = filepath.Join(work, "commands")
		if err := buildCommands(ctx, commands, commandsDir); err != nil {
			return 3, err
		}
		logf("built %s (static) for $FIBMESH_TEST_BIN", strings.Join(commands, " "))
	}
	hostFiles, err := hostTools(ctx, o.hostTools)
	if err != nil {
		return 3, err
	}

	nonce := make([]byte, 8)
	if _, err := rand.Read(nonce); err != nil {
		return 3, fmt.Errorf("nonce: %w", err)
	}
	var testArgs strings.Builder
	runFlag := ""
	if o.run != "" {
		runFlag = " " + shellQuote("-test.run="+o.run)
	}
	for _, a := range o.args {
		testArgs.WriteString(" " + shellQuote(a))
	}
	var roots []string
	for _, m := range o.modules {
		if !idx.builtin[normModName(m)] {
			roots = append(roots, normModName(m))
		}
	}
	initScript, err := renderInit(initConfig{
		Release:     k.Release,
		Nonce:       hex.EncodeToString(nonce),
		Modules:     strings.Join(roots, " "),
		TestTimeout: o.testTimeout.String(),
		TestArgs:    testArgs.String(),
		Run:         runFlag,
		Commands:    commandsDir != "",
		Tests:       tests,
	})
	if err != nil {
		return 3, err
	}
	rd := &initramfs{Busybox: bb, Applets: applets, Kernel: k, Modules: mods, Init: initScript, Tests: tests, HostFiles: hostFiles, Commands: commandsDir}
	initrd := filepath.Join(work, "initramfs.cpio")
	size, err := rd.write(initrd)
	if err != nil {
		return 3, err
	}
	logf("initramfs: %.1f MiB (%d test binaries, %d modules, %d host files), built in %v", float64(size)/(1<<20), len(tests), len(mods), len(hostFiles), time.Since(t0).Round(100*time.Millisecond))
	logf("booting %s under qemu TCG (-smp %d, -m %s, timeout %v)", k.Release, o.smp, o.mem, o.timeout)

	boot := func(skip int, onLine func(string)) (*vmResult, error) {
		app := o.appendArgs
		if skip > 0 {
			app = strings.TrimSpace(app + fmt.Sprintf(" vmtest.skip=%d", skip))
		}
		res, err := runVM(ctx, vmConfig{
			Qemu: qemu, Kernel: k.Vmlinuz, Initrd: initrd, SMP: o.smp, Memory: o.mem,
			Append: app, Nonce: hex.EncodeToString(nonce), Timeout: o.timeout, Console: stdout, OnLine: onLine,
		})
		if res != nil {
			at := "no /init start seen"
			if res.Boot > 0 {
				at = fmt.Sprintf("%v to /init (guest uptime %ss)", res.Boot.Round(100*time.Millisecond), res.GuestUp)
			}
			logf("boot: %s; VM run %v; whole vmtest %v", at, res.Total.Round(100*time.Millisecond), time.Since(t0).Round(100*time.Millisecond))
		}
		return res, err
	}
	rc, err := runAll(len(tests), o.panicRetries, boot, logf)
	if err != nil {
		return rc, err
	}
	if rc == 0 && failedBuilds > 0 {
		logf("FAIL (%d packages failed to build)", failedBuilds)
		return 1, nil
	}
	return rc, nil
}

// progress follows the VM's console: which test binary runs, which test
// in it started last, and how many binaries finished (in every VM of
// the run, counted in order: a rerun skips the ones done).
type progress struct {
	done, failed int
	pkg, test    string // running now ("" between binaries)
	finished     string // the last binary that finished
}

func (p *progress) line(s string) {
	switch {
	case strings.HasPrefix(s, "=== vmtest: "):
		p.pkg, p.test = strings.TrimPrefix(s, "=== vmtest: "), ""
	case strings.HasPrefix(s, "=== RUN "):
		p.test = strings.TrimSpace(strings.TrimPrefix(s, "=== RUN "))
	case strings.HasPrefix(s, "--- vmtest: ok "), strings.HasPrefix(s, "--- vmtest: FAIL "):
		p.done++
		if strings.HasPrefix(s, "--- vmtest: FAIL ") {
			p.failed++
		}
		p.finished, p.pkg, p.test = p.pkg, "", ""
	}
}

// where names the binary and test that were running.
func (p *progress) where() string {
	if p.pkg == "" && p.finished != "" {
		return "no test binary, after " + p.finished + " finished"
	}
	if p.pkg == "" {
		return "no test binary yet"
	}
	if p.test == "" {
		return p.pkg
	}
	return p.pkg + " (" + p.test + ")"
}

// runAll boots VMs until the n test binaries have run: the first VM runs
// them all; if its kernel panics, a fresh VM (boot(skip)) runs the binary
// that was running and the ones after it, at most retries times. A panic
// is a kernel bug, not a test result (this kernel's kTLS has had races
// at socket teardown), but it is never hidden: its report is logged and
// the run's last line names every panic and the rerun's outcome. It
// returns the exit status: 0 all passed, 1 a test binary failed, 3 the VM
// gave no result (a panic past the retries, a timeout).
func runAll(n, retries int, boot func(skip int, onLine func(string)) (*vmResult, error), logf func(string, ...any)) (int, error) {
	p := &progress{}
	var panics []string
	for attempt := 0; ; attempt++ {
		skip := p.done
		res, err := boot(skip, p.line)
		if err != nil {
			if res != nil && res.Panicked {
				where := p.where()
				panics = append(panics, where)
				report := res.Oops
				if len(report) == 0 {
					report = res.LastSeen
				}
				logf("the guest kernel panicked while running %s; its report:\n\t%s", where, strings.Join(report, "\n\t"))
				if attempt < retries && p.done < n {
					logf("booting a fresh VM for the %d test binaries not finished (kernel panic rerun %d of %d)", n-p.done, attempt+1, retries)
					p.pkg, p.test, p.finished = "", "", ""
					continue
				}
				return 3, fmt.Errorf("%w; kernel panic in %s (no reruns left: -panic-retries %d)", err, strings.Join(panics, ", then in "), retries)
			}
			if res != nil && len(res.LastSeen) > 0 {
				err = fmt.Errorf("%w; while running %s; last console lines:\n\t%s", err, p.where(), strings.Join(res.LastSeen, "\n\t"))
			}
			return 3, err
		}
		rc := 0
		if res.RC != 0 || p.failed > 0 {
			rc = 1
		}
		verdict := "PASS"
		if rc != 0 {
			verdict = fmt.Sprintf("FAIL (tests status %d, %d test binaries failed)", res.RC, p.failed)
		}
		if len(panics) > 0 {
			logf("%s after %d kernel panic(s), each rerun in a fresh VM: in %s; see the report(s) above", verdict, len(panics), strings.Join(panics, ", then in "))
		} else {
			logf("%s", verdict)
		}
		return rc, nil
	}
}

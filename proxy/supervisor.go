package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// A proxy can run as several worker processes sharing its listeners: each
// process has its own descriptor limit (a proxied connection takes two),
// and one worker's crash cannot take the others' connections with it. The
// supervisor binds every socket and starts the workers with the capture
// listeners as inherited descriptors; the kernel spreads connections over
// whichever workers accept. It serves health, metrics and admin for all of
// them, restarts a worker that dies (the others, and their connections,
// go on), and passes SIGTERM on. It never accepts a capture connection
// itself, and in a drain it closes its copies of the listeners at once, so
// that a stopped listener refuses new connections instead of queueing
// them for nobody.

// MaxWorkers is the most worker processes a proxy runs.
const MaxWorkers = 64

// supervisor is the supervising process's state.
type supervisor struct {
	p     *Proxy
	exe   string
	args  []string
	files []*os.File // the capture listeners, inherited by every worker
	dirs  string     // their directions, for WorkerEnv

	mu       sync.Mutex
	workers  []*worker // by slot: the slot's current process
	draining bool
	keepers  sync.WaitGroup
	running  atomic.Int64
	restarts atomic.Uint64
	own      *prometheus.Registry // the supervisor's own series
}

// worker is the supervisor's side of one worker process.
type worker struct {
	slot    int
	cmd     *exec.Cmd
	started time.Time
	mu      sync.Mutex // one request at a time on ctl
	ctl     *net.UnixConn
	r       *bufio.Reader
	done    chan struct{} // closed when the process has exited
}

// request sends one line and returns the reply, up to a "# EOF" line.
func (w *worker) request(line string) (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.ctl.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(w.ctl, line+"\n"); err != nil {
		return "", err
	}
	var b strings.Builder
	for {
		l, err := w.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		if l == "# EOF\n" {
			return b.String(), nil
		}
		b.WriteString(l)
	}
}

// StartWorkers runs n worker processes of the program at exe with args,
// sharing p's capture listeners, and waits until each is ready. p then
// serves only health, metrics and admin, for them all.
func (p *Proxy) StartWorkers(n int, exe string, args []string) error {
	if n < 1 || n > MaxWorkers {
		return fmt.Errorf("%d workers: between 1 and %d", n, MaxWorkers)
	}
	s := &supervisor{p: p, exe: exe, args: args, workers: make([]*worker, n), own: prometheus.NewRegistry()}
	s.own.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shunt_proxy_workers_running", Help: "Worker processes running."},
			func() float64 { return float64(s.running.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shunt_proxy_worker_restarts_total", Help: "Workers restarted after they exited."},
			func() float64 { return float64(s.restarts.Load()) }))
	var dirs []string
	for _, c := range p.captures() {
		f, err := c.ln.File()
		if err != nil {
			s.closeFiles()
			return err
		}
		s.files = append(s.files, f)
		dirs = append(dirs, c.name)
	}
	s.dirs = strings.Join(dirs, ",")
	for i := range n {
		w, err := s.spawn(i)
		if err != nil {
			s.killAll()
			s.closeFiles()
			return fmt.Errorf("worker %d: %w", i, err)
		}
		s.workers[i] = w
		s.running.Add(1)
	}
	p.sup = s
	p.log.Info("workers started", "workers", n)
	return nil
}

// spawn starts a worker for slot and waits until it says it is ready.
func (s *supervisor) spawn(slot int) (*worker, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "ctl"), os.NewFile(uintptr(fds[1]), "worker-ctl")
	defer mine.Close()
	cmd := exec.Command(s.exe, s.args...)
	cmd.Env = append(os.Environ(), WorkerEnv+"="+s.dirs)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = append([]*os.File{theirs}, s.files...)
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		return nil, fmt.Errorf("starting: %w", err)
	}
	w := &worker{slot: slot, cmd: cmd, started: time.Now(), done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(w.done) }()
	c, err := net.FileConn(mine)
	if err != nil {
		_ = cmd.Process.Kill()
		return nil, err
	}
	w.ctl, w.r = c.(*net.UnixConn), bufio.NewReader(c)
	_ = w.ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
	if l, err := w.r.ReadString('\n'); err != nil || l != "ready\n" {
		_ = cmd.Process.Kill()
		<-w.done
		return nil, fmt.Errorf("did not become ready (%v): %s", err, cmd.ProcessState)
	}
	return w, nil
}

// serve is Serve for a supervisor: it keeps every slot's worker running
// until ctx ends, then drains them.
func (s *supervisor) serve(ctx context.Context) error {
	p := s.p
	p.serveAdmin()
	p.ready.Store(true)
	for _, w := range s.workers {
		s.keepers.Add(1)
		go s.keep(ctx, w)
	}
	<-ctx.Done()
	s.drain()
	p.closeAdmin()
	return nil
}

// keep restarts a slot's worker whenever it exits before the drain, with
// a growing pause if it keeps dying soon after starting.
func (s *supervisor) keep(ctx context.Context, w *worker) {
	defer s.keepers.Done()
	const firstPause, lastPause, healthy = 100 * time.Millisecond, 10 * time.Second, 10 * time.Second
	pause := firstPause
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.done:
		}
		if ctx.Err() != nil {
			return
		}
		s.running.Add(-1)
		s.restarts.Add(1)
		if time.Since(w.started) > healthy {
			pause = firstPause
		}
		s.p.log.Error("a worker exited; restarting it (the other workers and their connections go on)",
			"worker", w.slot, "pid", w.cmd.Process.Pid, "state", w.cmd.ProcessState.String(), "in", pause)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, lastPause)
			nw, err := s.spawn(w.slot)
			if err != nil {
				s.p.log.Error("restarting a worker failed", "worker", w.slot, "err", err, "retry_in", pause)
				continue
			}
			if !s.replace(nw) {
				_ = nw.cmd.Process.Signal(syscall.SIGTERM)
				return
			}
			w = nw
			s.running.Add(1)
			s.p.log.Info("worker restarted", "worker", w.slot, "pid", w.cmd.Process.Pid)
			break
		}
	}
}

// replace puts w in its slot, unless a drain has begun.
func (s *supervisor) replace(w *worker) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.workers[w.slot] = w
	return true
}

// each calls fn for every slot's current worker.
func (s *supervisor) each(fn func(*worker)) {
	s.mu.Lock()
	ws := append([]*worker(nil), s.workers...)
	s.mu.Unlock()
	for _, w := range ws {
		fn(w)
	}
}

// drain stops the supervisor's own hold on the listeners (so that those
// the workers stop refuse at once), passes SIGTERM on, and waits for every
// worker's drain; one still running well after the drain timeout is
// killed.
func (s *supervisor) drain() {
	p := s.p
	p.draining.Store(true)
	p.ready.Store(false)
	s.mu.Lock()
	s.draining = true
	s.mu.Unlock()
	s.closeFiles()
	for _, c := range p.captures() {
		p.closeCapture(c)
	}
	s.keepers.Wait()
	sig := syscall.SIGTERM
	if p.quitNow.Load() {
		sig = syscall.SIGKILL // /quitquitquit: no drain
	}
	s.each(func(w *worker) { _ = w.cmd.Process.Signal(sig) })
	limit := time.NewTimer(p.cfg.DrainTimeout + 5*time.Second)
	defer limit.Stop()
	s.each(func(w *worker) {
		select {
		case <-w.done:
		case <-limit.C:
			p.log.Error("a worker did not finish its drain in time; killing it", "worker", w.slot, "pid", w.cmd.Process.Pid)
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	})
	p.log.Info("workers stopped")
}

func (s *supervisor) killAll() {
	for _, w := range s.workers {
		if w != nil {
			_ = w.cmd.Process.Kill()
			<-w.done
		}
	}
}

func (s *supervisor) closeFiles() {
	for _, f := range s.files {
		f.Close()
	}
	s.files = nil
}

// ready says whether some worker is running to serve.
func (s *supervisor) ready() bool { return s.running.Load() > 0 }

// gather is the supervisor's metrics: every worker's families merged
// (summed series by series), then the supervisor's own.
func (s *supervisor) gather() ([]*dto.MetricFamily, error) {
	var sets [][]*dto.MetricFamily
	s.each(func(wk *worker) {
		text, err := wk.request("metrics")
		if err == nil && strings.HasPrefix(text, "# error") {
			err = errors.New(strings.TrimPrefix(strings.TrimSpace(text), "# error "))
		}
		var mfs []*dto.MetricFamily
		if err == nil {
			mfs, err = decodeFamilies(strings.TrimSuffix(strings.TrimSpace(text), "# EOF"))
		}
		if err != nil {
			s.p.log.Warn("worker metrics", "worker", wk.slot, "err", err)
			return
		}
		sets = append(sets, mfs)
	})
	own, err := s.own.Gather()
	if err != nil {
		return nil, err
	}
	return mergeFamilies(append(sets, own)...), nil
}

// SignalWorkers passes SIGHUP on to the workers (each reloads its
// configuration file); without workers it does nothing.
func (p *Proxy) SignalWorkers() {
	if p.sup == nil {
		return
	}
	p.sup.each(func(w *worker) { _ = w.cmd.Process.Signal(syscall.SIGHUP) })
}

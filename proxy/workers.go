package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A proxy can run as several worker processes sharing its listeners: each
// process has its own descriptor limit (a proxied connection takes two),
// and one worker's crash cannot take the others' connections with it. The
// supervisor binds every socket, starts the workers with the capture
// listeners as inherited descriptors, serves health, metrics and admin for
// all of them, and passes SIGTERM on.

// WorkerEnv tells a process started by a supervisor that it is a worker,
// and which inherited descriptors are which: "outbound,inbound,…" in the
// order of descriptors 4 and up; descriptor 3 is its control socket.
const WorkerEnv = "SHUNT_PROXY_WORKER"

// worker is the supervisor's side of one worker process.
type worker struct {
	cmd  *exec.Cmd
	mu   sync.Mutex // one request at a time on ctl
	ctl  *net.UnixConn
	r    *bufio.Reader
	done chan struct{}
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
	var files []*os.File
	var dirs []string
	for _, c := range p.capture {
		f, err := c.ln.File()
		if err != nil {
			return err
		}
		defer f.Close()
		files = append(files, f)
		dirs = append(dirs, c.dir.String())
	}
	for i := 0; i < n; i++ {
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		mine, theirs := os.NewFile(uintptr(fds[0]), "ctl"), os.NewFile(uintptr(fds[1]), "worker-ctl")
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), WorkerEnv+"="+strings.Join(dirs, ","))
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.ExtraFiles = append([]*os.File{theirs}, files...)
		err = cmd.Start()
		theirs.Close()
		if err != nil {
			mine.Close()
			return fmt.Errorf("starting worker %d: %w", i, err)
		}
		c, err := net.FileConn(mine)
		mine.Close()
		if err != nil {
			return err
		}
		w := &worker{cmd: cmd, ctl: c.(*net.UnixConn), r: bufio.NewReader(c), done: make(chan struct{})}
		go func() { _ = cmd.Wait(); close(w.done) }()
		p.workers = append(p.workers, w)
		_ = w.ctl.SetReadDeadline(time.Now().Add(10 * time.Second))
		if l, err := w.r.ReadString('\n'); err != nil || l != "ready\n" {
			return fmt.Errorf("worker %d did not become ready: %q %v", i, l, err)
		}
	}
	// The supervisor's own capture listeners stay open (the workers share
	// them) but it accepts nothing.
	p.log.Info("workers started", "workers", n)
	return nil
}

// superviseServe is Serve for a supervisor: ready while every worker runs;
// on ctx's end, SIGTERM to the workers and wait for their drains.
func (p *Proxy) superviseServe(ctx context.Context) error {
	for i, srv := range p.http {
		go func() { _ = srv.Serve(p.httpLn[i]) }()
	}
	p.ready.Store(true)
	died := make(chan int, len(p.workers))
	for i, w := range p.workers {
		go func() { <-w.done; died <- i }()
	}
	var err error
	select {
	case <-ctx.Done():
	case i := <-died:
		err = fmt.Errorf("worker %d exited: %v", i, p.workers[i].cmd.ProcessState)
		p.log.Error("a worker exited; stopping the others", "worker", i, "state", p.workers[i].cmd.ProcessState)
	}
	p.ready.Store(false)
	for _, w := range p.workers {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, w := range p.workers {
		<-w.done
	}
	p.Close()
	for _, srv := range p.http {
		_ = srv.Close()
	}
	return err
}

// writeWorkerMetrics is WritePrometheus for a supervisor: every series
// summed over the workers (all of them are counters, gauges of counts, or
// histogram buckets, so sums are right).
func (p *Proxy) writeWorkerMetrics(w io.Writer) {
	var order []string
	sums := map[string]float64{}
	for i, wk := range p.workers {
		text, err := wk.request("metrics")
		if err != nil {
			p.log.Warn("worker metrics", "worker", i, "err", err)
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
			key, val, isSample := line, 0.0, !strings.HasPrefix(line, "#")
			if isSample {
				sp := strings.LastIndexByte(line, ' ')
				key = line[:sp]
				val, _ = strconv.ParseFloat(line[sp+1:], 64)
			}
			if _, seen := sums[key]; !seen {
				order = append(order, key)
				sums[key] = 0
			}
			if isSample {
				sums[key] += val
			}
		}
	}
	for _, key := range order {
		if strings.HasPrefix(key, "#") {
			fmt.Fprintln(w, key)
		} else {
			fmt.Fprintf(w, "%s %s\n", key, strconv.FormatFloat(sums[key], 'g', -1, 64))
		}
	}
}

// WorkerListeners takes the listeners a supervisor passed down, and the
// control socket; ok is false when this process is not a worker.
func WorkerListeners() (ctl *net.UnixConn, ok bool, err error) {
	dirs := os.Getenv(WorkerEnv)
	if dirs == "" {
		return nil, false, nil
	}
	c, err := net.FileConn(os.NewFile(3, "ctl"))
	if err != nil {
		return nil, true, err
	}
	return c.(*net.UnixConn), true, nil
}

// AdoptListeners makes p serve the capture listeners inherited from a
// supervisor, instead of binding its own.
func (p *Proxy) AdoptListeners() error {
	for i, d := range strings.Split(os.Getenv(WorkerEnv), ",") {
		f := os.NewFile(uintptr(4+i), "listener-"+d)
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("inherited listener %d: %w", i, err)
		}
		dir := Outbound
		if d == Inbound.String() {
			dir = Inbound
		}
		p.capture = append(p.capture, capture{ln.(*net.TCPListener), dir})
	}
	return nil
}

// ServeWorker runs a worker: it tells the supervisor it is ready, answers
// its requests on ctl, and serves until ctx ends (SIGTERM), then drains.
func (p *Proxy) ServeWorker(ctx context.Context, ctl *net.UnixConn) error {
	// A worker whose supervisor is gone (killed, say) drains and exits
	// rather than serve on unsupervised.
	ctx, orphaned := context.WithCancel(ctx)
	defer orphaned()
	errc := make(chan error, 1)
	go func() { errc <- p.Serve(ctx) }()
	for !p.ready.Load() {
		select {
		case err := <-errc:
			return err
		case <-time.After(5 * time.Millisecond):
		}
	}
	if _, err := io.WriteString(ctl, "ready\n"); err != nil {
		return err
	}
	go p.answerSupervisor(ctl, orphaned)
	return <-errc
}

func (p *Proxy) answerSupervisor(ctl *net.UnixConn, orphaned func()) {
	r := bufio.NewReader(ctl)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			p.log.Warn("the supervisor is gone; draining", "err", err)
			orphaned()
			return
		}
		var b strings.Builder
		switch cmd := strings.TrimSpace(line); {
		case cmd == "metrics":
			p.metrics.WritePrometheus(&b)
		case strings.HasPrefix(cmd, "level "):
			if err := p.level.UnmarshalText([]byte(strings.TrimPrefix(cmd, "level "))); err != nil {
				fmt.Fprintf(&b, "# error %v\n", err)
			}
		default:
			fmt.Fprintf(&b, "# error unknown request %q\n", cmd)
		}
		b.WriteString("# EOF\n")
		if _, err := io.WriteString(ctl, b.String()); err != nil {
			return
		}
	}
}

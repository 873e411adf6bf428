// Command dns is the cluster DNS of hack/cluster's offline single-node
// cluster (no registry to pull CoreDNS from): it watches Services through
// the API server and answers A queries for
// NAME.NAMESPACE.svc.DOMAIN with the Service's ClusterIP, over UDP. Every
// other name gets NXDOMAIN (REFUSED outside DOMAIN): the cluster has no
// upstream. It is enough for the agent (hostNetwork,
// ClusterFirstWithHostNet) to resolve fibmesh-controller.fibmesh-system.svc
// and for pods to resolve Services.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/net/dns/dnsmessage"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	kubeconfig := flag.String("kubeconfig", "", "`PATH` of the kubeconfig to watch Services with (required)")
	listen := flag.String("listen", "", "UDP `ADDR:PORT` to serve on (required)")
	domain := flag.String("domain", "cluster.local", "the cluster's DNS `DOMAIN`")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*kubeconfig, *listen, *domain, log); err != nil {
		log.Error("dns", "err", err)
		os.Exit(1)
	}
}

func run(kubeconfig, listen, domain string, log *slog.Logger) error {
	if kubeconfig == "" || listen == "" {
		return fmt.Errorf("--kubeconfig and --listen are required")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig %s: %w", kubeconfig, err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("client for %s: %w", kubeconfig, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	f := informers.NewSharedInformerFactory(cs, 0)
	svcs := f.Core().V1().Services()
	lister := svcs.Lister()
	svcs.Informer()
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), svcs.Informer().HasSynced) {
		return fmt.Errorf("services from %s: cache not synced", cfg.Host)
	}
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", listen, err)
	}
	go func() { <-ctx.Done(); pc.Close() }()
	log.Info("serving", "listen", listen, "domain", domain)
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read %s: %w", listen, err)
		}
		out, err := answer(buf[:n], lister, "."+strings.TrimSuffix(domain, ".")+".")
		if err != nil {
			log.Warn("bad query", "from", from, "err", err)
			continue
		}
		if _, err := pc.WriteTo(out, from); err != nil {
			log.Warn("reply", "to", from, "err", err)
		}
	}
}

// answer builds the reply to one query.
func answer(q []byte, lister listers.ServiceLister, suffix string) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	qs, err := p.AllQuestions()
	if err != nil || len(qs) != 1 {
		return nil, fmt.Errorf("want one question (%d, %v)", len(qs), err)
	}
	question := qs[0]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RCode: dnsmessage.RCodeNameError}
	var ip netip.Addr
	name := strings.ToLower(question.Name.String())
	switch {
	case !strings.HasSuffix(name, suffix):
		rh.RCode = dnsmessage.RCodeRefused
	default:
		// NAME.NAMESPACE.svc
		parts := strings.Split(strings.TrimSuffix(name, suffix), ".")
		if len(parts) == 3 && parts[2] == "svc" {
			if svc, err := lister.Services(parts[1]).Get(parts[0]); err == nil {
				rh.RCode = dnsmessage.RCodeSuccess
				ip = clusterIP(svc)
			}
		}
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(question); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if ip.Is4() && question.Type == dnsmessage.TypeA {
		rr := dnsmessage.ResourceHeader{Name: question.Name, Class: dnsmessage.ClassINET, TTL: 5}
		if err := b.AResource(rr, dnsmessage.AResource{A: ip.As4()}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

func clusterIP(svc *corev1.Service) netip.Addr {
	ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
	if err != nil {
		return netip.Addr{}
	}
	return ip
}

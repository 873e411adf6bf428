package main

// End-to-end tests of the admission webhook: the controller binary serves
// it over TLS on --webhook-listen, and a real TLS client posts
// AdmissionReviews to it as the API server does, verifying the serving
// certificate against the mesh CA's root (a service clientConfig: the
// Service's DNS name; a url clientConfig: an IP from --xds-tls-san) or
// against the --webhook-cert files'.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/fibmesh/fibmesh/controller/ca"
)

// reviewVS is an AdmissionReview of a CREATE of the VirtualService
// production/<name> routing to reviews with the given weights.
func reviewVS(name string, w1, w2 int) []byte {
	return fmt.Appendf(nil, `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
  "uid":"e2e-%[1]s","kind":{"group":"networking.istio.io","version":"v1","kind":"VirtualService"},
  "resource":{"group":"networking.istio.io","version":"v1","resource":"virtualservices"},
  "name":%[1]q,"namespace":"production","operation":"CREATE","userInfo":{"username":"e2e"},
  "object":{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":%[1]q,"namespace":"production"},
    "spec":{"hosts":["reviews-%[1]s.example.com"],"http":[{"route":[
      {"destination":{"host":"reviews","subset":"v1"},"weight":%[2]d},
      {"destination":{"host":"reviews","subset":"v2"},"weight":%[3]d}]}]}}}}`, name, w1, w2)
}

// webhookClient returns a client that trusts roots and names serverName
// in its handshake (as the API server names the Service), without
// keep-alive (goleak).
func webhookClient(roots *x509.CertPool, serverName string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}}}
}

// postReview posts body to url and returns the review's response.
func postReview(t *testing.T, c *http.Client, url string, body []byte) (*admissionv1.AdmissionResponse, error) {
	t.Helper()
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &out); err != nil || out.Response == nil {
		return nil, fmt.Errorf("not an AdmissionReview with a response (%v): %s", err, b)
	}
	return out.Response, nil
}

func rootPool(t *testing.T, caDir string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(caDir, ca.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s holds no certificate", ca.CertFile)
	}
	return pool
}

// TestWebhookTLS: the webhook's certificate, from the mesh CA, verifies
// for the Service's DNS name and for a --xds-tls-san IP (a url
// clientConfig); a broken VirtualService is denied with its IST code, a
// good one allowed; a client that does not trust the CA fails its
// handshake.
func TestWebhookTLS(t *testing.T) {
	bin, _ := binaries(t)
	root := t.TempDir()
	cfg := filepath.Join(root, "config")
	copyDir(t, "../../controller/testdata/cluster", cfg)
	caDir := filepath.Join(root, "ca")
	hook := freeAddr(t)
	p := startController(t, bin, "--config-dir", cfg, "--ca-dir", caDir, "--webhook-listen", hook, "--xds-tls-san", "127.0.0.1")
	p.waitReady(t)
	roots := rootPool(t, caDir)
	_, port, _ := net.SplitHostPort(hook)

	for _, tc := range []struct{ name, serverName, url string }{
		{"service", "fibmesh-controller.fibmesh-system.svc", "https://" + hook + "/validate"},
		{"url", "", "https://127.0.0.1:" + port + "/validate?timeout=10s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := webhookClient(roots, tc.serverName)
			resp, err := postReview(t, c, tc.url, reviewVS("ok-"+tc.name, 90, 10))
			if err != nil {
				t.Fatal(err)
			}
			if !resp.Allowed || string(resp.UID) != "e2e-ok-"+tc.name {
				t.Errorf("good VirtualService: %+v, want allowed with its uid", resp)
			}
			resp, err = postReview(t, c, tc.url, reviewVS("zero", 0, 0))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, "Error [IST0106] (VirtualService production/zero)") {
				t.Errorf("VirtualService with zero weights: %+v, want denied with IST0106", resp)
			}
		})
	}
	t.Run("untrusted", func(t *testing.T) {
		_, err := postReview(t, webhookClient(x509.NewCertPool(), "fibmesh-controller.fibmesh-system.svc"), "https://"+hook+"/validate", reviewVS("x", 90, 10))
		if _, ok := errors.AsType[*tls.CertificateVerificationError](err); !ok {
			t.Errorf("client without the CA's root: %v, want a certificate verification error", err)
		}
	})
	t.Run("plaintext", func(t *testing.T) {
		_, err := postReview(t, &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}, "http://"+hook+"/validate", reviewVS("x", 90, 10))
		// Go's TLS server answers 400 and closes: the client reads the
		// 400 or a reset, never a review.
		if err == nil {
			t.Error("a plaintext request got an AdmissionReview")
		}
	})
	p.stop(t)
}

// selfSigned writes a self-signed serving certificate for 127.0.0.1 and
// its key to certFile and keyFile, and returns it.
func selfSigned(t *testing.T, cn, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	// The key first, then the certificate, each replaced atomically, as
	// a Secret volume's update is.
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{keyFile, "PRIVATE KEY", kd}, {certFile, "CERTIFICATE", der}} {
		tmp := f.path + ".tmp"
		if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestWebhookCertFiles: with --webhook-cert/--webhook-key the webhook
// serves that pair, and the renewed pair once the files change.
func TestWebhookCertFiles(t *testing.T) {
	bin, _ := binaries(t)
	root := t.TempDir()
	cfg := filepath.Join(root, "config")
	copyDir(t, "../../controller/testdata/cluster", cfg)
	certFile, keyFile := filepath.Join(root, "tls.crt"), filepath.Join(root, "tls.key")
	first := selfSigned(t, "first", certFile, keyFile)
	hook := freeAddr(t)
	p := startController(t, bin, "--config-dir", cfg, "--ca-dir", filepath.Join(root, "ca"), "--webhook-listen", hook,
		"--webhook-cert", certFile, "--webhook-key", keyFile)
	p.waitReady(t)
	check := func(c *x509.Certificate) {
		t.Helper()
		pool := x509.NewCertPool()
		pool.AddCert(c)
		resp, err := postReview(t, webhookClient(pool, ""), "https://"+hook+"/validate", reviewVS("files", 90, 10))
		if err != nil || !resp.Allowed {
			t.Fatalf("review with %s's certificate: %+v %v", c.Subject.CommonName, resp, err)
		}
	}
	check(first)
	second := selfSigned(t, "second", certFile, keyFile)
	check(second)
	p.stop(t)
}

// TestWebhookFlagErrors: the webhook's flags are checked before anything
// is served.
func TestWebhookFlagErrors(t *testing.T) {
	bin, _ := binaries(t)
	dir := t.TempDir()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--webhook-cert", "c.pem"}, "--webhook-cert and --webhook-key go together"},
		{[]string{"--webhook-key", "k.pem"}, "--webhook-cert and --webhook-key go together"},
		{[]string{"--webhook-cert", "c.pem", "--webhook-key", "k.pem", "--webhook-listen", ""}, "--webhook-cert needs --webhook-listen"},
		{[]string{"--namespace", ""}, "--namespace is empty"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		args := append([]string{"--config-dir", dir, "--ca-dir", filepath.Join(dir, "ca"), "--xds-listen", "256.0.0.1:1", "--xds-tls-listen", "256.0.0.1:1",
			"--monitoring-listen", "256.0.0.1:1", "--webhook-listen", "256.0.0.1:1"}, tt.args...)
		cmd := exec.CommandContext(ctx, bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		cancel()
		if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("fibmesh-controller %s: %v, stderr %q; want exit status 2 saying %q", strings.Join(tt.args, " "), err, stderr.String(), tt.want)
		}
	}
	// A pair that does not load stops the controller at start-up.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not PEM"), 0o600)
	cmd := exec.CommandContext(ctx, bin, "--config-dir", dir, "--ca-dir", filepath.Join(dir, "ca"), "--xds-listen", freeAddr(t), "--xds-tls-listen", "",
		"--monitoring-listen", freeAddr(t), "--webhook-listen", freeAddr(t), "--webhook-cert", bad, "--webhook-key", bad)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.ExitCode() != 1 || !strings.Contains(stderr.String(), "webhook certificate "+bad) {
		t.Errorf("with a --webhook-cert that is not PEM: %v, stderr %q; want exit status 1 naming the file", err, stderr.String())
	}
}

package kubelet

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestBackoff(t *testing.T) {
	b := backoff{base: 10 * time.Second, max: 300 * time.Second}
	want := []time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second}
	for i, w := range want {
		if got := b.delay(i + 1); got != w {
			t.Errorf("delay before restart %d = %s, want %s", i+1, got, w)
		}
	}
}

func TestShouldRestart(t *testing.T) {
	tests := []struct {
		policy corev1.RestartPolicy
		code   int
		want   bool
	}{
		{corev1.RestartPolicyAlways, 0, true},
		{corev1.RestartPolicyAlways, 1, true},
		{"", 0, true},
		{corev1.RestartPolicyOnFailure, 0, false},
		{corev1.RestartPolicyOnFailure, 2, true},
		{corev1.RestartPolicyNever, 2, false},
	}
	for _, tt := range tests {
		if got := shouldRestart(tt.policy, tt.code); got != tt.want {
			t.Errorf("shouldRestart(%q, %d) = %v, want %v", tt.policy, tt.code, got, tt.want)
		}
	}
}

func testPod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "prod", Labels: map[string]string{"app": "web"}, Annotations: map[string]string{"team": "a"}},
		Spec:       corev1.PodSpec{NodeName: "node2", ServiceAccountName: "web-sa"},
		Status:     corev1.PodStatus{PodIP: "10.200.2.11", HostIP: "10.100.0.2"},
	}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func TestContainerEnv(t *testing.T) {
	c := &corev1.Container{Name: "app", Env: []corev1.EnvVar{
		fieldEnv("POD_NAME", "metadata.name"),
		fieldEnv("POD_NAMESPACE", "metadata.namespace"),
		fieldEnv("POD_IP", "status.podIP"),
		fieldEnv("NODE", "spec.nodeName"),
		fieldEnv("SA", "spec.serviceAccountName"),
		fieldEnv("APP", "metadata.labels['app']"),
		fieldEnv("TEAM", "metadata.annotations['team']"),
		{Name: "URL", Value: "http://$(POD_IP):80/$(UNDEFINED)/$$(POD_IP)"},
	}}
	env, err := containerEnv(testPod(), c, "/opt/bin")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	want := map[string]string{
		"POD_NAME": "web-1", "POD_NAMESPACE": "prod", "POD_IP": "10.200.2.11", "NODE": "node2", "SA": "web-sa",
		"APP": "web", "TEAM": "a", "URL": "http://10.200.2.11:80/$(UNDEFINED)/$(POD_IP)", "HOSTNAME": "web-1", "HOME": "/root",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if !strings.HasPrefix(got["PATH"], "/opt/bin:") {
		t.Errorf("PATH %q does not start with the lab's binary directory", got["PATH"])
	}

	errs := []struct {
		env  corev1.EnvVar
		want string
	}{
		{fieldEnv("X", "metadata.generation"), `spec.containers[app].env[0] (X).valueFrom.fieldRef: fieldPath "metadata.generation" is not supported`},
		{corev1.EnvVar{Name: "Y", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{Key: "k"}}}, "spec.containers[app].env[0] (Y).valueFrom: the lab resolves only fieldRef"},
	}
	for _, e := range errs {
		_, err := containerEnv(testPod(), &corev1.Container{Name: "app", Env: []corev1.EnvVar{e.env}}, "")
		if err == nil || !strings.Contains(err.Error(), e.want) {
			t.Errorf("env %+v: err %v, want %q", e.env, err, e.want)
		}
	}
}

func TestArgv(t *testing.T) {
	env := []string{"PORT=9080", "NAME=web"}
	tests := []struct {
		c    corev1.Container
		want []string
		ok   bool
	}{
		{corev1.Container{Command: []string{"app", "--port", "$(PORT)"}, Args: []string{"--name=$(NAME)", "$(NOPE)"}}, []string{"app", "--port", "9080", "--name=web", "$(NOPE)"}, true},
		{corev1.Container{Args: []string{"--port", "1"}}, nil, false}, // the image's entrypoint: unknown to the lab
		{corev1.Container{}, nil, false},
	}
	for _, tt := range tests {
		got, ok := argv(&tt.c, env)
		if ok != tt.ok || !cmp.Equal(got, tt.want) {
			t.Errorf("argv(%v %v) = %q, %v; want %q, %v", tt.c.Command, tt.c.Args, got, ok, tt.want, tt.ok)
		}
	}
}

func TestPhase(t *testing.T) {
	run := ProcStatus{State: StateRunning}
	crash := ProcStatus{State: StateWaiting, Reason: "CrashLoopBackOff"}
	ok := ProcStatus{State: StateTerminated, Reason: "Completed"}
	fail := ProcStatus{State: StateTerminated, Reason: "Error", ExitCode: 3}
	noCmd := ProcStatus{State: StateWaiting, Reason: "NoCommand"}
	probing := ProcStatus{State: StateRunning, Probed: true}
	probed := ProcStatus{State: StateRunning, Probed: true, Ready: true, Decided: true}
	tests := []struct {
		cs    []ProcStatus
		phase string
		ready bool
	}{
		{[]ProcStatus{run, run}, "Running", true},
		{[]ProcStatus{run, noCmd}, "Running", true},
		{[]ProcStatus{run, crash}, "Running", false},
		{[]ProcStatus{run, probing}, "Running", false},
		{[]ProcStatus{run, {State: StateWaiting, Reason: "ContainerCreating", Probed: true}}, "Running", false},
		{[]ProcStatus{run, {State: StateWaiting, Reason: "ContainerCreating"}}, "Running", true},
		{[]ProcStatus{run, probed}, "Running", true},
		{[]ProcStatus{run, ok}, "Running", false},
		{[]ProcStatus{ok, ok}, "Succeeded", false},
		{[]ProcStatus{ok, fail}, "Failed", false},
	}
	for _, tt := range tests {
		phase, ready := phase(tt.cs)
		if phase != tt.phase || ready != tt.ready {
			t.Errorf("phase(%v) = %s, %v; want %s, %v", tt.cs, phase, ready, tt.phase, tt.ready)
		}
	}
}

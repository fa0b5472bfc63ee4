// The kubelets of a test control plane, simulated: registers the nodes of a cluster.json
// (examples/cloudedge's form: {"nodes": [Node, ...]}) with their names and labels, keeps them
// Ready (status heartbeats and node Leases), and plays the kubelet's part for the pods bound to
// them: Running and Ready once scheduled, gone once deleted. No container runs.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

const heartbeat = 10 * time.Second

type clusterFile struct {
	Nodes []struct {
		Metadata struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	} `json:"nodes"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "admin kubeconfig")
	nodesFile := flag.String("nodes", "", "cluster.json whose nodes to register")
	flag.Parse()
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("nodesim: %v", err)
	}
	cfg.QPS, cfg.Burst = 100, 200
	client := kubernetes.NewForConfigOrDie(cfg)
	raw, err := os.ReadFile(*nodesFile)
	if err != nil {
		log.Fatalf("nodesim: %v", err)
	}
	var cf clusterFile
	if err := json.Unmarshal(raw, &cf); err != nil {
		log.Fatalf("nodesim: %s: %v", *nodesFile, err)
	}
	if len(cf.Nodes) == 0 {
		log.Fatalf("nodesim: %s lists no nodes", *nodesFile)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	mine := map[string]bool{}
	for i, n := range cf.Nodes {
		mine[n.Metadata.Name] = true
		if err := register(ctx, client, n.Metadata.Name, n.Metadata.Labels, i); err != nil {
			log.Fatalf("nodesim: node %s: %v", n.Metadata.Name, err)
		}
	}
	log.Printf("nodesim: %d nodes registered", len(cf.Nodes))
	go func() {
		t := time.NewTicker(heartbeat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				for name := range mine {
					if err := beat(ctx, client, name); err != nil && ctx.Err() == nil {
						log.Printf("nodesim: heartbeat %s: %v", name, err)
					}
				}
			}
		}
	}()
	for ctx.Err() == nil {
		if err := runPods(ctx, client, mine); err != nil && ctx.Err() == nil {
			log.Printf("nodesim: pod watch: %v", err)
			time.Sleep(time.Second)
		}
	}
}

func register(ctx context.Context, c kubernetes.Interface, name string, labels map[string]string, i int) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("8"),
		corev1.ResourceMemory: resource.MustParse("32Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	n.Status.Capacity, n.Status.Allocatable = capacity, capacity
	n.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("10.77.0.%d", i+1)},
		{Type: corev1.NodeHostName, Address: name},
	}
	n.Status.NodeInfo = corev1.NodeSystemInfo{
		KubeletVersion: "v1.37.2", OperatingSystem: "linux", Architecture: "amd64",
		ContainerRuntimeVersion: "nodesim://0",
	}
	n.Status.Conditions = conditions(metav1.Now())
	if _, err := c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		return err
	}
	return beat(ctx, c, name)
}

func conditions(now metav1.Time) []corev1.NodeCondition {
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return []corev1.NodeCondition{
		cond(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady"),
		cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory"),
		cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure"),
		cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID"),
	}
}

// The node lifecycle controller reads the node's Lease for liveness and its Ready condition for
// readiness: both are renewed, keeping the transition times.
func beat(ctx context.Context, c kubernetes.Interface, name string) error {
	now := metav1.NewMicroTime(time.Now())
	leases := c.CoordinationV1().Leases("kube-node-lease")
	l, err := leases.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: ptr.To(name), LeaseDurationSeconds: ptr.To(int32(40)), RenewTime: &now,
			},
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
	} else if err == nil {
		l.Spec.RenewTime = &now
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	}
	if err != nil {
		return err
	}
	n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	fresh := conditions(metav1.Now())
	for i := range n.Status.Conditions {
		for _, f := range fresh {
			if n.Status.Conditions[i].Type == f.Type {
				n.Status.Conditions[i].LastHeartbeatTime = f.LastHeartbeatTime
				if n.Status.Conditions[i].Status != f.Status {
					n.Status.Conditions[i] = f
				}
			}
		}
	}
	_, err = c.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
	return err
}

// One list-then-watch of every pod; returns when the watch ends.
func runPods(ctx context.Context, c kubernetes.Interface, mine map[string]bool) error {
	list, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	handle := func(p *corev1.Pod) {
		if !mine[p.Spec.NodeName] {
			return
		}
		key := p.Namespace + "/" + p.Name + "/" + string(p.UID)
		if p.DeletionTimestamp != nil {
			// the kubelet's last word: the pod is gone once its containers are
			err := c.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
				GracePeriodSeconds: ptr.To(int64(0)), Preconditions: &metav1.Preconditions{UID: &p.UID},
			})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				log.Printf("nodesim: delete %s: %v", key, err)
			}
			return
		}
		if p.Status.Phase == corev1.PodRunning || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			return
		}
		mu.Lock()
		if seen[key] {
			mu.Unlock()
			return
		}
		seen[key] = true
		mu.Unlock()
		if err := start(ctx, c, p); err != nil && !apierrors.IsNotFound(err) {
			log.Printf("nodesim: start %s: %v", key, err)
			mu.Lock()
			delete(seen, key)
			mu.Unlock()
		}
	}
	for i := range list.Items {
		handle(&list.Items[i])
	}
	w, err := c.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return err
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if ev.Type == watch.Error {
			return apierrors.FromObject(ev.Object)
		}
		if p, ok := ev.Object.(*corev1.Pod); ok && ev.Type != watch.Deleted {
			handle(p)
		}
	}
	return nil
}

func start(ctx context.Context, c kubernetes.Interface, p *corev1.Pod) error {
	now := metav1.Now()
	p = p.DeepCopy()
	p.Status.Phase = corev1.PodRunning
	p.Status.StartTime = &now
	p.Status.HostIP = "10.77.0.1"
	p.Status.PodIP = fmt.Sprintf("10.78.%d.%d", now.Unix()%250, now.Nanosecond()%250+1)
	p.Status.Conditions = nil
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	p.Status.ContainerStatuses = nil
	for _, ct := range p.Spec.Containers {
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: ct.Name, Image: ct.Image, ImageID: ct.Image, Ready: true, Started: ptr.To(true),
			ContainerID: "nodesim://" + string(p.UID) + "/" + ct.Name,
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	_, err := c.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}

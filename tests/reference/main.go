// Command reference-driver answers pod cases with the reference webhook's own code
// (github.com/aws/amazon-eks-pod-identity-webhook, pkg/handler and pkg/cache), for the
// differential test in tests/it/differential.rs.
//
// Standard input holds one JSON case per line; standard output gets one JSON line per case, in
// order: {"patch": [...]} (null when the reference leaves the pod alone), or {"error": "..."},
// plus "skipRecord" when the pod has a skip-containers annotation (below).
//
// The pieces are wired as the reference's main.go wires them from its flags: cache.New with
// the flag defaults (the token expiration raised to the minimum first), a container-credentials
// FileConfig loaded with the case's file, and handler.NewModifier with the annotation domain,
// mount path, region and no lookup grace period. The ServiceAccount reaches the real cache the
// way its informer delivers it (the event handler cache.New registers, called directly), so
// the annotations are parsed by the reference's own code with the case's prefix and defaults;
// it is deleted the same way after the case, so a case never sees another's ServiceAccount.
package main

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"strings"

	"github.com/aws/amazon-eks-pod-identity-webhook/pkg"
	"github.com/aws/amazon-eks-pod-identity-webhook/pkg/cache"
	"github.com/aws/amazon-eks-pod-identity-webhook/pkg/containercredentials"
	"github.com/aws/amazon-eks-pod-identity-webhook/pkg/handler"
	"k8s.io/api/admission/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	coreinformers "k8s.io/client-go/informers/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
)

// flags are the reference's mutation flags, under its flag names.
type flags struct {
	AnnotationPrefix    string `json:"annotation-prefix"`
	TokenAudience       string `json:"token-audience"`
	TokenMountPath      string `json:"token-mount-path"`
	TokenExpiration     int64  `json:"token-expiration"`
	AWSDefaultRegion    string `json:"aws-default-region"`
	STSRegionalEndpoint bool   `json:"sts-regional-endpoint"`
	CCAudience          string `json:"container-credentials-audience"`
	CCTokenMountPath    string `json:"container-credentials-token-mount-path"`
	CCTokenVolumeName   string `json:"container-credentials-token-volume-name"`
	CCTokenPath         string `json:"container-credentials-token-path"`
	CCFullURI           string `json:"container-credentials-full-uri"`
}

type serviceAccount struct {
	Name        string            `json:"name"`
	Annotations map[string]string `json:"annotations"`
}

type input struct {
	Flags     flags           `json:"flags"`
	Namespace string          `json:"namespace"`
	Pod       json.RawMessage `json:"pod"`
	// Nil: the ServiceAccount is not known.
	ServiceAccount *serviceAccount `json:"serviceAccount"`
	// The content of --watch-container-credentials-config; nil: no file.
	ContainerCredentials json.RawMessage `json:"containerCredentials"`
	// Seeds the Modifier's random source (the container-credentials lifetime jitter).
	Seed int64 `json:"seed"`
}

type output struct {
	Patch json.RawMessage `json:"patch"`
	Error string          `json:"error,omitempty"`
	// What the reference's getContainersToSkip reads from the pod's skip-containers
	// annotation: the first record of encoding/csv with its default settings (the function
	// is unexported, so the same call is made here), or null when that read fails. Absent
	// when the pod has no such annotation.
	SkipRecord *[]string `json:"skipRecord,omitempty"`
}

// informer stands in for the ServiceAccount informer: cache.New only registers its event
// handler and asks whether it has synced; every other method is left unimplemented.
type informer struct {
	toolscache.SharedIndexInformer
	handler toolscache.ResourceEventHandler
}

func (i *informer) AddEventHandler(h toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error) {
	i.handler = h
	return nil, nil
}

func (i *informer) HasSynced() bool { return true }

type serviceAccountInformer struct{ informer *informer }

func (s serviceAccountInformer) Informer() toolscache.SharedIndexInformer { return s.informer }
func (s serviceAccountInformer) Lister() corelisters.ServiceAccountLister { return nil }

var _ coreinformers.ServiceAccountInformer = serviceAccountInformer{}

// cacheKey is what cache.New takes from the flags.
type cacheKey struct {
	audience, prefix string
	regionalSTS      bool
	expiration       int64
}

type serviceAccountCache struct {
	cache    cache.ServiceAccountCache
	informer *informer
}

// caches holds one reference cache per flag combination, as one process holds one.
var caches = map[cacheKey]serviceAccountCache{}

func cacheFor(f flags) serviceAccountCache {
	key := cacheKey{
		audience:    f.TokenAudience,
		prefix:      f.AnnotationPrefix,
		regionalSTS: f.STSRegionalEndpoint,
		// As main.go: the flag is raised to the minimum before the cache gets it.
		expiration: pkg.ValidateMinTokenExpiration(f.TokenExpiration),
	}
	if c, ok := caches[key]; ok {
		return c
	}
	inf := &informer{}
	c := serviceAccountCache{
		cache: cache.New(key.audience, key.prefix, key.regionalSTS, key.expiration,
			serviceAccountInformer{inf}, nil, cache.ComposeRoleArn{}, nil),
		informer: inf,
	}
	caches[key] = c
	return c
}

// skipRecord reads the skip-containers annotation as getContainersToSkip does.
func skipRecord(prefix string, pod json.RawMessage) *[]string {
	var p corev1.Pod
	if err := json.Unmarshal(pod, &p); err != nil {
		return nil
	}
	value, ok := p.Annotations[prefix+"/"+pkg.SkipContainersAnnotation]
	if !ok {
		return nil
	}
	record, err := csv.NewReader(strings.NewReader(value)).Read()
	if err != nil {
		record = nil
	}
	return &record
}

func run(in input) (out output) {
	defer func() {
		if r := recover(); r != nil {
			out = output{Error: fmt.Sprintf("the reference panicked: %v", r)}
		}
	}()
	f := in.Flags
	c := cacheFor(f)
	if in.ServiceAccount != nil {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
			Name:        in.ServiceAccount.Name,
			Namespace:   in.Namespace,
			Annotations: in.ServiceAccount.Annotations,
		}}
		c.informer.handler.OnAdd(sa, false)
		defer c.informer.handler.OnDelete(sa)
	}
	cc := containercredentials.NewFileConfig(f.CCAudience, f.CCTokenMountPath, f.CCTokenVolumeName, f.CCTokenPath, f.CCFullURI)
	if len(in.ContainerCredentials) > 0 && string(in.ContainerCredentials) != "null" {
		if err := cc.Load(in.ContainerCredentials); err != nil {
			return output{Error: "container credentials file: " + err.Error()}
		}
	}
	modifier := handler.NewModifier(rand.New(rand.NewSource(in.Seed)),
		handler.WithAnnotationDomain(f.AnnotationPrefix),
		handler.WithMountPath(f.TokenMountPath),
		handler.WithServiceAccountCache(c.cache),
		handler.WithContainerCredentialsConfig(cc),
		handler.WithRegion(f.AWSDefaultRegion),
		handler.WithSALookupGraceTime(0),
	)
	review := &v1beta1.AdmissionReview{Request: &v1beta1.AdmissionRequest{
		UID:       "differential",
		Namespace: in.Namespace,
		Operation: v1beta1.Create,
		Object:    runtime.RawExtension{Raw: in.Pod},
	}}
	response := modifier.MutatePod(review)
	out.SkipRecord = skipRecord(f.AnnotationPrefix, in.Pod)
	switch {
	case !response.Allowed && response.Result != nil:
		out.Error = response.Result.Message
	case !response.Allowed:
		out.Error = "not allowed, without a message"
	case len(response.Patch) > 0:
		out.Patch = response.Patch
	}
	return out
}

func main() {
	// The reference logs through klog: none of it is wanted here (a pod it cannot read is an
	// answer, not a log line), so standard error keeps only the driver's own failures.
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	for name, value := range map[string]string{"logtostderr": "false", "stderrthreshold": "FATAL"} {
		if err := klogFlags.Set(name, value); err != nil {
			fmt.Fprintf(os.Stderr, "klog flag %s: %v\n", name, err)
			os.Exit(1)
		}
	}
	klog.SetOutput(io.Discard)

	reader := bufio.NewReader(os.Stdin)
	writer := bufio.NewWriter(os.Stdout)
	encoder := json.NewEncoder(writer)
	for n := 1; ; n++ {
		line, err := reader.ReadBytes('\n')
		if len(line) == 0 && err == io.EOF {
			break
		}
		if err != nil && err != io.EOF {
			fmt.Fprintf(os.Stderr, "reading case %d: %v\n", n, err)
			os.Exit(1)
		}
		var in input
		var out output
		if err := json.Unmarshal(line, &in); err != nil {
			out = output{Error: fmt.Sprintf("case %d is not a case: %v", n, err)}
		} else {
			out = run(in)
		}
		if err := encoder.Encode(out); err != nil {
			fmt.Fprintf(os.Stderr, "writing answer %d: %v\n", n, err)
			os.Exit(1)
		}
	}
	if err := writer.Flush(); err != nil {
		fmt.Fprintf(os.Stderr, "writing answers: %v\n", err)
		os.Exit(1)
	}
}

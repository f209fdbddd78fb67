package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	"github.com/cxop-dev/cxop/internal/collectorapi"
)

// +kubebuilder:rbac:groups=batch,resources=cronjobs,verbs=get;list;watch;create;update;delete

// WaveScheduler is how Surveys' scheduled waves run. The manager is built
// with one: CronJobWaves in a cluster, ManagerWaves where no CronJob
// controller runs (`cxop dev`). Its methods are unexported: the Survey
// reconciler is its only caller.
type WaveScheduler interface {
	// apply makes the Survey's waves run on its schedule, or stop when it
	// has none; a failure is recorded in obs.
	apply(ctx context.Context, r *SurveyReconciler, svy *cxv1.Survey, obs *readiness)
	// lastRun returns when the Survey's last wave ran. audience is the
	// Survey's usable audience, nil when it has none or its references do
	// not resolve: no wave can go out then.
	lastRun(ctx context.Context, r *SurveyReconciler, svy *cxv1.Survey, audience []collectorapi.Member, obs *surveyObservation) *metav1.Time
	// recheck is how soon the Survey must be reconciled again for its
	// waves, or false when something else brings it back.
	recheck(svy *cxv1.Survey, now time.Time) (time.Duration, bool)
}

// CronJobWaves runs each scheduled Survey's waves as a CronJob, whose Jobs
// run `cxop survey-wave` against the namespace's collector.
type CronJobWaves struct {
	// Image runs `cxop survey-wave`; it is the collector image.
	Image string
	// ImagePullSecrets are the collectors' image pull Secrets, by name.
	ImagePullSecrets []string
}

// ManagerWaves sends each due wave from the manager itself, where no
// CronJob controller runs (`cxop dev`). Status keeps when the last one went
// out, and the Survey is reconciled again when the next is due.
type ManagerWaves struct{}

// waveJobName names a Survey's CronJob. CronJob names are at most 52
// characters (the Jobs they make add 11); a longer one is shortened with a
// hash so that it stays unique.
func waveJobName(survey string) string {
	name := "cxop-wave-" + survey
	if len(name) <= 52 {
		return name
	}
	sum := sha256.Sum256([]byte(survey))
	return name[:52-9] + "-" + hex.EncodeToString(sum[:4])
}

// apply creates, updates or deletes the Survey's CronJob.
func (w *CronJobWaves) apply(ctx context.Context, r *SurveyReconciler, svy *cxv1.Survey, obs *readiness) {
	cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: svy.Namespace, Name: waveJobName(svy.Name)}}
	what := fmt.Sprintf("CronJob %s/%s", cj.Namespace, cj.Name)
	if svy.Spec.Schedule == nil {
		obs.apiStep(cxv1.ApplyFailedReason, "delete wave "+what, client.IgnoreNotFound(r.Delete(ctx, cj)))
		return
	}
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, cj, func() error {
		w.mutateJob(cj, svy)
		return controllerutil.SetControllerReference(svy, cj, r.Scheme())
	})
	obs.apiStep(cxv1.ApplyFailedReason, "apply wave "+what, err)
}

// audienceError is an audience that cannot be used: its ConfigMap or key
// is missing, or it is not a list of customers.
type audienceError struct {
	reason, message string
}

func (e *audienceError) Error() string { return e.message }

// readAudience reads and parses the audience a Survey's schedule names. It
// returns an *audienceError for an audience that cannot be used, and any
// other error as the API server's.
func (r *SurveyReconciler) readAudience(ctx context.Context, svy *cxv1.Survey) ([]collectorapi.Member, error) {
	ref := svy.Spec.Schedule.Audience
	var cm corev1.ConfigMap
	err := r.uncached().Get(ctx, types.NamespacedName{Namespace: svy.Namespace, Name: ref.Name}, &cm)
	switch {
	case apierrors.IsNotFound(err):
		return nil, &audienceError{cxv1.AudienceNotFoundReason, fmt.Sprintf("spec.schedule.audience: ConfigMap %q not found", ref.Name)}
	case err != nil:
		return nil, fmt.Errorf("get configmap %s/%s: %w", svy.Namespace, ref.Name, err)
	}
	data, ok := cm.Data[ref.Key]
	if !ok {
		return nil, &audienceError{cxv1.AudienceNotFoundReason, fmt.Sprintf("spec.schedule.audience: ConfigMap %q has no key %q", ref.Name, ref.Key)}
	}
	members, err := collectorapi.ParseAudience([]byte(data))
	if err != nil {
		return nil, &audienceError{cxv1.InvalidAudienceReason, fmt.Sprintf("spec.schedule.audience: ConfigMap %q key %q: %v", ref.Name, ref.Key, err)}
	}
	return members, nil
}

// checkAudience records whether the waves of a scheduled, unsuspended
// Survey have an audience to go to, and returns it (nil when there is
// none). Without one every wave fails (in a cluster, its pod never starts)
// until someone fixes the ConfigMap, so the Survey is stalled.
func (r *SurveyReconciler) checkAudience(ctx context.Context, svy *cxv1.Survey, obs *readiness) []collectorapi.Member {
	if svy.Spec.Schedule == nil || svy.Spec.Suspend {
		return nil
	}
	members, err := r.readAudience(ctx, svy)
	var bad *audienceError
	if errors.As(err, &bad) {
		obs.fail(failure{reason: bad.reason, message: bad.message, stalled: true})
		return nil
	}
	if !obs.apiStep(cxv1.ReadFailedReason, "read the audience", err) {
		return nil
	}
	if members == nil {
		members = []collectorapi.Member{} // usable: its waves go to no one
	}
	return members
}

// lastRun returns when the Survey's last wave ran, as its CronJob records
// it.
func (w *CronJobWaves) lastRun(ctx context.Context, r *SurveyReconciler, svy *cxv1.Survey, _ []collectorapi.Member, obs *surveyObservation) *metav1.Time {
	if svy.Spec.Schedule == nil {
		return nil
	}
	var cj batchv1.CronJob
	err := r.Get(ctx, types.NamespacedName{Namespace: svy.Namespace, Name: waveJobName(svy.Name)}, &cj)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if !obs.apiStep(cxv1.ReadFailedReason, "read wave CronJob", err) {
		return svy.Status.LastScheduleTime
	}
	return cj.Status.LastScheduleTime
}

// recheck: the CronJob's runs bring the Survey back (it owns the CronJob).
func (w *CronJobWaves) recheck(*cxv1.Survey, time.Time) (time.Duration, bool) { return 0, false }

func (w *CronJobWaves) mutateJob(cj *batchv1.CronJob, svy *cxv1.Survey) {
	sch := svy.Spec.Schedule
	cj.Labels = mergeLabels(cj.Labels, map[string]string{ManagedByLabel: ManagedByValue, surveyLabel: svy.Name})
	cj.Spec.Schedule = sch.Cron
	cj.Spec.TimeZone = ptr.To(sch.GetTimeZone())
	cj.Spec.Suspend = ptr.To(svy.Spec.Suspend)
	// A wave that is still running when the next is due is not doubled,
	// and one missed by more than an hour (the cluster was down) is
	// skipped rather than sent late.
	cj.Spec.ConcurrencyPolicy = batchv1.ForbidConcurrent
	cj.Spec.StartingDeadlineSeconds = ptr.To[int64](3600)
	cj.Spec.SuccessfulJobsHistoryLimit = ptr.To[int32](3)
	cj.Spec.FailedJobsHistoryLimit = ptr.To[int32](3)
	const tokenDir, audienceDir = "/etc/cxop-token", "/etc/cxop-audience"
	audienceKey := sch.Audience.Key
	cj.Spec.JobTemplate.Spec = batchv1.JobSpec{
		BackoffLimit: ptr.To[int32](4),
		// A run that cannot start (a missing audience ConfigMap keeps its
		// pod Pending) must not hold the Forbid policy's slot for ever and
		// silently swallow every later wave.
		ActiveDeadlineSeconds: ptr.To[int64](3600),
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{ManagedByLabel: ManagedByValue, surveyLabel: svy.Name}},
			Spec: corev1.PodSpec{
				RestartPolicy:                corev1.RestartPolicyNever,
				AutomountServiceAccountToken: ptr.To(false),
				ImagePullSecrets:             pullSecrets(w.ImagePullSecrets),
				SecurityContext: &corev1.PodSecurityContext{
					RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](collectorRunAsUser), RunAsGroup: ptr.To[int64](collectorRunAsUser),
					// The kubelet writes the token file root-owned, mode 0440:
					// only the fsGroup lets the non-root user read it.
					FSGroup:        ptr.To[int64](collectorRunAsUser),
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				Containers: []corev1.Container{{
					Name:  "wave",
					Image: w.Image,
					Args: []string{"survey-wave",
						fmt.Sprintf("--collector=http://%s.%s.svc:%d", CollectorName, svy.Namespace, CollectorPort),
						"--survey=" + svy.Name,
						"--token-file=" + tokenDir + "/" + TokenKey,
						"--audience=" + audienceDir + "/" + audienceKey,
						// The Job's name is unique per scheduled run and kept
						// by the Job's retries: the wave's idempotency key.
						"--wave=$(JOB_NAME)",
					},
					Env: []corev1.EnvVar{{Name: "JOB_NAME", ValueFrom: &corev1.EnvVarSource{
						FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['batch.kubernetes.io/job-name']"},
					}}},
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
						Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
					},
					SecurityContext: &corev1.SecurityContext{
						AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true), RunAsNonRoot: ptr.To(true),
						Capabilities:   &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					VolumeMounts: []corev1.VolumeMount{
						{Name: "token", MountPath: tokenDir, ReadOnly: true},
						{Name: "audience", MountPath: audienceDir, ReadOnly: true},
					},
				}},
				Volumes: []corev1.Volume{
					{Name: "token", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
						SecretName: SurveyTokenSecretName(svy.Name), DefaultMode: ptr.To[int32](0o440)}}},
					{Name: "audience", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: sch.Audience.Name},
						Items:                []corev1.KeyToPath{{Key: audienceKey, Path: audienceKey}},
					}}},
				},
			},
		},
	}
}

// apply: there is nothing to create; lastRun sends the waves.
func (ManagerWaves) apply(context.Context, *SurveyReconciler, *cxv1.Survey, *readiness) {}

// lastRun sends the Survey's wave when one is due and the Survey has an
// audience, and returns when the last wave went out. A failure to send is
// recorded in obs.
func (m ManagerWaves) lastRun(ctx context.Context, r *SurveyReconciler, svy *cxv1.Survey, audience []collectorapi.Member, obs *surveyObservation) *metav1.Time {
	if svy.Spec.Schedule == nil {
		return nil
	}
	if audience == nil {
		return svy.Status.LastScheduleTime
	}
	sent, err := m.send(ctx, r, svy, audience, obs.now)
	if err != nil {
		obs.fail(failure{reason: cxv1.WaveFailedReason, message: err.Error(), err: err})
	}
	if sent != nil {
		return sent
	}
	return svy.Status.LastScheduleTime
}

// recheck comes back when the next wave is due.
func (ManagerWaves) recheck(svy *cxv1.Survey, now time.Time) (time.Duration, bool) {
	if svy.Status.NextScheduleTime == nil {
		return 0, false
	}
	return max(svy.Status.NextScheduleTime.Sub(now), 0) + time.Second, true
}

// send sends a Survey's wave when it is due and returns the time of the
// wave it sent, or nil. Only the latest due run is sent, as a CronJob sends
// one late run, so a laptop that slept through several sends one wave. The
// wave's id is the Survey and the scheduled time: sending it again after a
// crash invites no one twice.
func (ManagerWaves) send(ctx context.Context, r *SurveyReconciler, svy *cxv1.Survey, audience []collectorapi.Member, now time.Time) (*metav1.Time, error) {
	sch := svy.Spec.Schedule
	if sch == nil || svy.Spec.Suspend {
		return nil, nil
	}
	s, err := cronParser.Parse("CRON_TZ=" + sch.GetTimeZone() + " " + sch.Cron)
	if err != nil {
		return nil, nil // the spec check reports it
	}
	from := svy.CreationTimestamp.Time
	if last := svy.Status.LastScheduleTime; last != nil {
		from = last.Time
	}
	due := s.Next(from)
	if due.After(now) {
		return nil, nil
	}
	for n := s.Next(due); !n.After(now); n = s.Next(n) {
		due = n
	}
	url := r.Live.Runtime.URL(svy.Namespace)
	if url == "" {
		return nil, nil // no collector yet; the next reconcile tries again
	}
	var sec corev1.Secret
	if err := r.Get(ctx, types.NamespacedName{Namespace: svy.Namespace, Name: SurveyTokenSecretName(svy.Name)}, &sec); err != nil {
		return nil, fmt.Errorf("wave token: %w", err)
	}
	wave := fmt.Sprintf("%s-%d", svy.Name, due.Unix())
	sent, dup, err := collectorapi.SendWave(ctx, &http.Client{Timeout: 30 * time.Second}, url, string(sec.Data[TokenKey]), svy.Name, wave, audience)
	if err != nil {
		return nil, fmt.Errorf("send wave %s: %w", wave, err)
	}
	ctrl.LoggerFrom(ctx).Info("sent survey wave", "wave", wave, "customers", sent, "alreadyTaken", dup)
	return ptr.To(metav1.NewTime(due.UTC())), nil
}

// scheduleStatus is when the next wave of a scheduled, unsuspended Survey
// is due, from its schedule in its time zone.
func scheduleStatus(svy *cxv1.Survey, now time.Time) *metav1.Time {
	sch := svy.Spec.Schedule
	if sch == nil || svy.Spec.Suspend {
		return nil
	}
	s, err := cronParser.Parse("CRON_TZ=" + sch.GetTimeZone() + " " + sch.Cron)
	if err != nil {
		return nil
	}
	return ptr.To(metav1.NewTime(s.Next(now).UTC()))
}

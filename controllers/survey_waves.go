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
	"github.com/cxop-dev/cxop/internal/collector"
	"github.com/cxop-dev/cxop/internal/survey/engine"
)

// +kubebuilder:rbac:groups=batch,resources=cronjobs,verbs=get;list;watch;create;update;delete

// WaveJobs runs a Survey's scheduled waves as CronJobs, in a cluster. Nil
// (as under `cxop dev`, which runs no CronJob controller) creates none;
// status still shows when the next wave is due.
type WaveJobs struct {
	// Image runs `cxop survey-wave`; it is the collector image.
	Image string
	// ImagePullSecrets are the collectors' image pull Secrets, by name.
	ImagePullSecrets []string
}

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

// syncWaves creates, updates or deletes the Survey's CronJob; a failure is
// recorded in obs.
func (r *SurveyReconciler) syncWaves(ctx context.Context, svy *cxv1.Survey, obs *readiness) {
	if r.Waves == nil {
		return
	}
	cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Namespace: svy.Namespace, Name: waveJobName(svy.Name)}}
	what := fmt.Sprintf("CronJob %s/%s", cj.Namespace, cj.Name)
	if svy.Spec.Schedule == nil {
		obs.apiStep(cxv1.ApplyFailedReason, "delete wave "+what, client.IgnoreNotFound(r.Delete(ctx, cj)))
		return
	}
	_, err := controllerutil.CreateOrUpdate(ctx, r.Client, cj, func() error {
		r.mutateWaveJob(cj, svy)
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
func (r *SurveyReconciler) readAudience(ctx context.Context, svy *cxv1.Survey) ([]engine.Member, error) {
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
	members, err := collector.ParseAudience([]byte(data))
	if err != nil {
		return nil, &audienceError{cxv1.InvalidAudienceReason, fmt.Sprintf("spec.schedule.audience: ConfigMap %q key %q: %v", ref.Name, ref.Key, err)}
	}
	return members, nil
}

// checkAudience records whether the waves of a scheduled, unsuspended
// Survey have an audience to go to, and reports whether they do. Without
// one every wave fails (in a cluster, its pod never starts) until someone
// fixes the ConfigMap, so the Survey is stalled.
func (r *SurveyReconciler) checkAudience(ctx context.Context, svy *cxv1.Survey, obs *readiness) bool {
	if svy.Spec.Schedule == nil || svy.Spec.Suspend {
		return false
	}
	_, err := r.readAudience(ctx, svy)
	var bad *audienceError
	if errors.As(err, &bad) {
		obs.fail(failure{reason: bad.reason, message: bad.message, stalled: true})
		return false
	}
	return obs.apiStep(cxv1.ReadFailedReason, "read the audience", err)
}

// lastSchedule returns when the Survey's last wave ran. In a cluster its
// CronJob records it; where the manager runs the waves itself
// (runLocalWave, when due is set: the audience is usable and the
// references resolve) status keeps it.
func (r *SurveyReconciler) lastSchedule(ctx context.Context, svy *cxv1.Survey, due bool, obs *surveyObservation) *metav1.Time {
	if svy.Spec.Schedule == nil {
		return nil
	}
	if r.Waves == nil {
		if !due {
			return svy.Status.LastScheduleTime
		}
		sent, err := r.runLocalWave(ctx, svy, obs.now)
		if err != nil {
			obs.fail(failure{reason: cxv1.WaveFailedReason, message: err.Error(), err: err})
		}
		if sent != nil {
			return sent
		}
		return svy.Status.LastScheduleTime
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

func (r *SurveyReconciler) mutateWaveJob(cj *batchv1.CronJob, svy *cxv1.Survey) {
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
				ImagePullSecrets:             pullSecrets(r.Waves.ImagePullSecrets),
				SecurityContext: &corev1.PodSecurityContext{
					RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](collectorRunAsUser), RunAsGroup: ptr.To[int64](collectorRunAsUser),
					// The kubelet writes the token file root-owned, mode 0440:
					// only the fsGroup lets the non-root user read it.
					FSGroup:        ptr.To[int64](collectorRunAsUser),
					SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
				Containers: []corev1.Container{{
					Name:  "wave",
					Image: r.Waves.Image,
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

// runLocalWave sends a Survey's wave from the manager itself when it is
// due, where no CronJob controller runs (`cxop dev`), and returns the time
// of the wave it sent, or nil. Only the latest due run is sent, as a
// CronJob sends one late run, so a laptop that slept through several sends
// one wave. The wave's id is the Survey and the scheduled time: sending it
// again after a crash invites no one twice.
func (r *SurveyReconciler) runLocalWave(ctx context.Context, svy *cxv1.Survey, now time.Time) (*metav1.Time, error) {
	sch := svy.Spec.Schedule
	if r.Waves != nil || sch == nil || svy.Spec.Suspend {
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
	audience, err := r.readAudience(ctx, svy)
	if err != nil {
		return nil, fmt.Errorf("wave audience: %w", err)
	}
	var sec corev1.Secret
	if err := r.Get(ctx, types.NamespacedName{Namespace: svy.Namespace, Name: SurveyTokenSecretName(svy.Name)}, &sec); err != nil {
		return nil, fmt.Errorf("wave token: %w", err)
	}
	wave := fmt.Sprintf("%s-%d", svy.Name, due.Unix())
	sent, dup, err := collector.SendWave(ctx, &http.Client{Timeout: 30 * time.Second}, url, string(sec.Data[TokenKey]), svy.Name, wave, audience)
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

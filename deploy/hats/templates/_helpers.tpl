{{/* Names and labels shared by every hats template. */}}

{{- define "hats.fullname" -}}
{{- if contains "hats" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-hats" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hats.labels" -}}
app.kubernetes.io/name: hats
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "hats.selector" -}}
app.kubernetes.io/name: hats
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hats.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The backup CronJob's image, the Dockerfile's `backup` stage: backup.image when set; else a separate
     backup.image.repository at the main image's tag; else the main image's repository and tag + "-backup". */}}
{{- define "hats.backupImage" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.backup.image.repository -}}
{{- printf "%s:%s" .Values.backup.image.repository (default $tag .Values.backup.image.tag) -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default (printf "%s-backup" $tag) .Values.backup.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The Secret a component reads: the one you manage, or the one this chart makes. */}}
{{- define "hats.workerSecret" -}}
{{- default (printf "%s-worker" (include "hats.fullname" .)) .Values.secrets.worker.existingSecret -}}
{{- end -}}

{{- define "hats.influxGateSecret" -}}
{{- default (printf "%s-influx-gate" (include "hats.fullname" .)) .Values.secrets.influxGate.existingSecret -}}
{{- end -}}

{{- define "hats.migrationsSecret" -}}
{{- default (printf "%s-migrations" (include "hats.fullname" .)) .Values.secrets.migrations.existingSecret -}}
{{- end -}}

{{/* Pod and container hardening shared by the worker and the migrations (the image's user 10001). */}}
{{- define "hats.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "hats.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- define "hats.exporterSecret" -}}
{{- default (printf "%s-exporter" (include "hats.fullname" .)) .Values.secrets.exporter.existingSecret -}}
{{- end -}}

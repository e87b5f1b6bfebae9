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

{{/* Whether the InfluxDB write gate serves HTTPS ("true") or plain HTTP (""). On by default: the workers' gate
     credential and every point cross the pod network, so a plaintext gate is only what you ask for by name
     (influxGate.tls.enabled: false); otherwise influxGate.tls.secretName names its certificate, and the clients
     verify it with tls.caSecret's ca.pem (no public CA signs a cluster-internal .svc name). */}}
{{- define "hats.influxGateTls" -}}
{{- $tls := .Values.influxGate.tls -}}
{{- if eq (toString $tls.enabled) "false" -}}
{{- if $tls.secretName -}}
{{- fail (printf "influxGate.tls.enabled is false but influxGate.tls.secretName is set (%q): remove one (enabled: false serves the gate in plain HTTP)" $tls.secretName) -}}
{{- end -}}
{{- else if not $tls.secretName -}}
{{- fail (printf "influxGate.tls.secretName: the write gate serves HTTPS by default; make a kubernetes.io/tls Secret (keys tls.crt, tls.key) for %s-influx-gate.%s.svc (e.g. a cert-manager Certificate) and name it here, or set influxGate.tls.enabled: false for a plaintext gate" (include "hats.fullname" .) .Release.Namespace) -}}
{{- else if not .Values.tls.caSecret -}}
{{- fail (printf "tls.caSecret: the workers and the code location verify the write gate's certificate (influxGate.tls.secretName %q) with tls.caSecret's ca.pem; set it to a Secret whose ca.pem holds the CA that issued it (and the services' CAs)" $tls.secretName) -}}
{{- else -}}
true
{{- end -}}
{{- end -}}

{{/* The gate's port name and its URL for the workers and the code location: https:// at the Service's .svc name
     (the name its certificate carries) with TLS, http:// at the Service's short name without. */}}
{{- define "hats.influxGatePortName" -}}
{{- ternary "https" "http" (eq (include "hats.influxGateTls" .) "true") -}}
{{- end -}}

{{- define "hats.influxGateUrl" -}}
{{- $service := printf "%s-influx-gate" (include "hats.fullname" .) -}}
{{- if include "hats.influxGateTls" . -}}
{{- printf "https://%s.%s.svc:%d" $service .Release.Namespace (int .Values.influxGate.port) -}}
{{- else -}}
{{- printf "http://%s:%d" $service (int .Values.influxGate.port) -}}
{{- end -}}
{{- end -}}

{{/* "yes" when a Dagster pod's values (list root podValues: volumes, volumeMounts) mount tls.caSecret at
     tls.mountPath, where dagster.postgresql.postgresqlParams.sslrootcert points. */}}
{{- define "hats.dagsterPodMountsCa" -}}
{{- $root := index . 0 -}}
{{- $pod := index . 1 -}}
{{- range $volume := ($pod.volumes | default list) -}}
{{- if and $volume.secret (eq (toString $volume.secret.secretName) $root.Values.tls.caSecret) -}}
{{- range $mount := ($pod.volumeMounts | default list) -}}
{{- if and (eq $mount.name $volume.name) (eq $mount.mountPath $root.Values.tls.mountPath) -}}yes{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

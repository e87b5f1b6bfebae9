"""One folder per step of the data's path; each exports its assets, checks and schedules."""

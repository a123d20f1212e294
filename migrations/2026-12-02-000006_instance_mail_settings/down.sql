DROP TABLE instance_mail_settings;

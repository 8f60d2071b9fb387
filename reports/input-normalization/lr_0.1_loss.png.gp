set terminal pngcairo size 800,500 font 'sans,10'
set output 'lr_0.1_loss.png'
set datafile separator ','
set title 'SGD lr 0.1: training loss' noenhanced
set xlabel 'step'
set ylabel 'training loss (mean over the logged steps)'
set grid
set key below noenhanced
set format x '%g'
set logscale y
set yrange [0.1:100]
plot 'curves.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / standardized per pixel / lr 0.1' ? column(3) : 1/0) with lines lw 2 title 'BN before ReLU / standardized per pixel / lr 0.1', \
     'curves.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / pixel/255 (0 to 1) / lr 0.1' ? column(3) : 1/0) with lines lw 2 title 'BN before ReLU / pixel/255 (0 to 1) / lr 0.1', \
     'curves.csv' every ::1 using 2:(strcol(1) eq 'BN before ReLU / raw bytes 0..255 / lr 0.1' ? column(3) : 1/0) with lines lw 2 title 'BN before ReLU / raw bytes 0..255 / lr 0.1', \
     'curves.csv' every ::1 using 2:(strcol(1) eq 'no BN / standardized per pixel / lr 0.1' ? column(3) : 1/0) with lines lw 2 title 'no BN / standardized per pixel / lr 0.1', \
     'curves.csv' every ::1 using 2:(strcol(1) eq 'no BN / pixel/255 (0 to 1) / lr 0.1' ? column(3) : 1/0) with lines lw 2 title 'no BN / pixel/255 (0 to 1) / lr 0.1', \
     'curves.csv' every ::1 using 2:(strcol(1) eq 'no BN / raw bytes 0..255 / lr 0.1' ? column(3) : 1/0) with lines lw 2 title 'no BN / raw bytes 0..255 / lr 0.1  [NaN at step 8]', \
     'lr_0.1_diverged.csv' every ::1 using 2:3 with points pt 2 ps 2.5 lw 2 lc rgb 'red' title 'loss NaN at this step'
